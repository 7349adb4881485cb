# One region of the global lock service on Google Cloud: a VPC network with an edge
# subnet (the agent) and three node subnets (coordinators and etcd members, one per
# zone), Cloud NAT with a fixed address, firewall rules that open each hop's ports
# to its peers only, the instances, and the region's DNS subzone. Resources go to
# the google provider's project.

data "google_compute_zones" "available" {
  region = var.location
  status = "UP"
}

locals {
  name       = "${var.name_prefix}-${var.region_name}"
  subzone    = "${var.region_name}.${var.dns_zone}"
  newbits    = 24 - tonumber(split("/", var.network_cidr)[1])
  edge_cidr  = cidrsubnet(var.network_cidr, local.newbits, 0)
  node_cidrs = [for z in range(3) : cidrsubnet(var.network_cidr, local.newbits, 1 + z)]
  # The first three zones in name order: a zone added later sorts after them
  # (new zones get later letters), so placements do not move.
  zones = slice(sort(data.google_compute_zones.available.names), 0, 3)

  agent_private_ip = cidrhost(local.edge_cidr, 10)
  client_cidrs     = length(var.client_cidrs) > 0 ? var.client_cidrs : [var.network_cidr]

  labels = merge(var.tags, {
    globallock-region = var.region_name
  })

  # Network tags: the firewall rules' sources and targets.
  tag_coordinator = "${local.name}-coordinator"
  tag_agent       = "${local.name}-agent"
  tag_etcd        = "${local.name}-etcd"
  tag_shard       = { for shard in keys(module.node_config.etcd_endpoints) : shard => "${local.name}-etcd-${shard}" }

  agent_public_ip      = google_compute_address.agent.address
  egress_ips           = [google_compute_address.nat.address]
  subzone_name_servers = google_dns_managed_zone.region.name_servers
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
