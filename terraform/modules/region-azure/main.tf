# One region of the global lock service on Azure: a resource group, a virtual
# network with an edge subnet (the agent) and three node subnets (coordinators and
# etcd members, one per availability zone), a NAT gateway with a fixed address,
# network security groups that open each hop's ports to its peers only
# (application security groups name the peers), the VMs, and the region's DNS
# subzone.

locals {
  name       = "${var.name_prefix}-${var.region_name}"
  subzone    = "${var.region_name}.${var.dns_zone}"
  newbits    = 24 - tonumber(split("/", var.network_cidr)[1])
  edge_cidr  = cidrsubnet(var.network_cidr, local.newbits, 0)
  node_cidrs = [for z in range(3) : cidrsubnet(var.network_cidr, local.newbits, 1 + z)]
  zones      = ["1", "2", "3"]

  agent_private_ip = cidrhost(local.edge_cidr, 10)
  client_cidrs     = length(var.client_cidrs) > 0 ? var.client_cidrs : [var.network_cidr]

  tags = merge(var.tags, {
    "globallock-region" = var.region_name
  })

  shards = keys(module.node_config.etcd_endpoints)

  agent_public_ip      = azurerm_public_ip.agent.ip_address
  egress_ips           = [azurerm_public_ip.nat.ip_address]
  subzone_name_servers = tolist(azurerm_dns_zone.region.name_servers)
}

module "node_config" {
  source = "../node-config"

  region_name            = var.region_name
  all_regions            = var.all_regions
  dns_zone               = var.dns_zone
  shard_count            = var.shard_count
  etcd_members_per_shard = var.etcd_members_per_shard
  coordinator_count      = var.coordinator_count
  node_cidrs             = local.node_cidrs
  agent_private_ip       = local.agent_private_ip
  image                  = var.image
  tls                    = var.tls
  access                 = var.access
}

resource "azurerm_resource_group" "main" {
  name     = local.name
  location = var.location
  tags     = local.tags
}
