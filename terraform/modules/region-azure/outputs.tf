# The output contract shared by region-aws, region-gcp and region-azure (see
# variables.tf).

output "region_name" {
  description = "This region's name."
  value       = var.region_name
}

output "agent_endpoint" {
  description = "URL the other regions' coordinators use for this region's agent: https://agent.<region>.<zone>:7411 (it proves <region>.agent.globallock)."
  value       = "https://agent.${local.subzone}:7411"
}

output "agent_public_ip" {
  description = "Public address of the agent (the A record agent.<region>.<zone>)."
  value       = local.agent_public_ip
}

output "coordinator_endpoints" {
  description = "gRPC URLs of this region's coordinators, by name: https://coordinator-N.<region>.<zone>:7400 (REST: same hosts, port 7480; TLS with the coordinators' certificate)."
  value       = [for i in range(var.coordinator_count) : "https://coordinator-${i}.${local.subzone}:7400"]
}

output "coordinator_hosts" {
  description = "DNS names of this region's coordinators (the targets of the SRV records)."
  value       = [for i in range(var.coordinator_count) : "coordinator-${i}.${local.subzone}"]
}

output "etcd_endpoints" {
  description = "Client URLs of each shard's etcd members, by shard name (reachable only from the agent)."
  value       = module.node_config.etcd_endpoints
}

output "egress_ips" {
  description = "Public addresses this region's coordinators connect from: give them, as /32, to the other regions' agent_client_cidrs."
  value       = local.egress_ips
}

output "dns_subzone" {
  description = "The subzone this module created: <region>.<dns_zone>."
  value       = local.subzone
}

output "dns_name_servers" {
  description = "Name servers of the subzone, to delegate it from dns_zone (modules/dns)."
  value       = local.subzone_name_servers
}
