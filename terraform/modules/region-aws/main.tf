# One region of the global lock service on AWS: a VPC with an edge subnet (the
# agent, the NAT gateway) and three node subnets (one per availability zone:
# coordinators and etcd members), security groups that open each hop's ports to
# its peers only, the instances, and the region's DNS subzone.

data "aws_region" "current" {}

# Zones a, b and c of the region, by name: a fixed set, so a zone AWS adds later
# never shifts the subnets (and the instances in them) to other zones.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for z in ["a", "b", "c"] : "${var.location}${z}"]
  }
}

# Ubuntu 24.04 LTS on all three clouds: the same packages (etcd-server, podman)
# and cloud-init everywhere.
data "aws_ami" "ubuntu" {
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  name       = "${var.name_prefix}-${var.region_name}"
  subzone    = "${var.region_name}.${var.dns_zone}"
  newbits    = 24 - tonumber(split("/", var.network_cidr)[1])
  edge_cidr  = cidrsubnet(var.network_cidr, local.newbits, 0)
  node_cidrs = [for z in range(3) : cidrsubnet(var.network_cidr, local.newbits, 1 + z)]
  azs        = slice(data.aws_availability_zones.available.names, 0, 3)

  agent_private_ip = cidrhost(local.edge_cidr, 10)
  client_cidrs     = length(var.client_cidrs) > 0 ? var.client_cidrs : [var.network_cidr]

  tags = merge(var.tags, {
    "globallock:region" = var.region_name
  })

  agent_public_ip      = aws_eip.agent.public_ip
  egress_ips           = [aws_eip.nat.public_ip]
  subzone_name_servers = aws_route53_zone.region.name_servers
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
