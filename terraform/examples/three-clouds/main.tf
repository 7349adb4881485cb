# One region on each cloud, wired together:
#   region-a: AWS     (10.40.0.0/16)
#   region-b: GCP     (10.41.0.0/16)
#   region-c: Azure   (10.42.0.0/16)
# Each region's agent admits the other two regions' coordinators (their NAT
# addresses) on 7411; every region's DNS subzone is delegated from dns_zone, which
# also gets _globallock._tcp.<zone> listing every coordinator.

locals {
  regions = ["region-a", "region-b", "region-c"]

  # One CA for the whole deployment; per region, the agent's certificate
  # (<region>.agent.globallock) and the coordinators' (coordinator.globallock and
  # *.<region>.<dns_zone>); and per region an etcd CA of its own with the etcd
  # members' certificate (<region>.etcd.globallock and every member's address)
  # and the agent's etcd client certificate: docs/deploy.md, "Terraform, step
  # by step".
  tls = {
    for r in local.regions : r => {
      ca_pem               = file("${var.tls_dir}/ca.pem")
      agent_cert_pem       = file("${var.tls_dir}/${r}/agent.crt")
      agent_key_pem        = file("${var.tls_dir}/${r}/agent.key")
      coordinator_cert_pem = file("${var.tls_dir}/${r}/coordinator.crt")
      coordinator_key_pem  = file("${var.tls_dir}/${r}/coordinator.key")
      etcd_ca_pem          = file("${var.tls_dir}/${r}/etcd-ca.pem")
      etcd_member_cert_pem = file("${var.tls_dir}/${r}/etcd-member.crt")
      etcd_member_key_pem  = file("${var.tls_dir}/${r}/etcd-member.key")
      agent_etcd_cert_pem  = file("${var.tls_dir}/${r}/agent-etcd.crt")
      agent_etcd_key_pem   = file("${var.tls_dir}/${r}/agent-etcd.key")
    }
  }

  egress = {
    region-a = module.region_a.egress_ips
    region-b = module.region_b.egress_ips
    region-c = module.region_c.egress_ips
  }

  # The other regions' coordinator egress addresses, as /32s.
  peers = {
    for r in local.regions : r => flatten([
      for other, ips in local.egress : [for ip in ips : "${ip}/32"] if other != r
    ])
  }
}

module "region_a" {
  source = "../../modules/region-aws"

  region_name            = "region-a"
  location               = var.aws_region
  all_regions            = local.regions
  shard_count            = var.shard_count
  etcd_members_per_shard = 3
  coordinator_count      = 2
  image                  = var.image
  tls                    = local.tls["region-a"]
  access                 = file(var.access_file)
  dns_zone               = var.dns_zone
  network_cidr           = "10.40.0.0/16"
  agent_client_cidrs     = local.peers["region-a"]
  client_cidrs           = lookup(var.client_cidrs, "region-a", [])
  prometheus_cidrs       = var.prometheus_cidrs
}

module "region_b" {
  source = "../../modules/region-gcp"

  region_name            = "region-b"
  location               = var.gcp_region
  all_regions            = local.regions
  shard_count            = var.shard_count
  etcd_members_per_shard = 3
  coordinator_count      = 2
  image                  = var.image
  tls                    = local.tls["region-b"]
  access                 = file(var.access_file)
  dns_zone               = var.dns_zone
  network_cidr           = "10.41.0.0/16"
  agent_client_cidrs     = local.peers["region-b"]
  client_cidrs           = lookup(var.client_cidrs, "region-b", [])
  prometheus_cidrs       = var.prometheus_cidrs
}

module "region_c" {
  source = "../../modules/region-azure"

  region_name            = "region-c"
  location               = var.azure_location
  all_regions            = local.regions
  shard_count            = var.shard_count
  etcd_members_per_shard = 3
  coordinator_count      = 2
  image                  = var.image
  tls                    = local.tls["region-c"]
  access                 = file(var.access_file)
  dns_zone               = var.dns_zone
  network_cidr           = "10.42.0.0/16"
  agent_client_cidrs     = local.peers["region-c"]
  client_cidrs           = lookup(var.client_cidrs, "region-c", [])
  prometheus_cidrs       = var.prometheus_cidrs
}

module "dns" {
  source = "../../modules/dns"

  zone_id  = var.route53_zone_id
  dns_zone = var.dns_zone
  regions = [
    for m in [module.region_a, module.region_b, module.region_c] : {
      region_name       = m.region_name
      dns_subzone       = m.dns_subzone
      dns_name_servers  = m.dns_name_servers
      coordinator_hosts = m.coordinator_hosts
    }
  ]
}
