output "agent_endpoints" {
  description = "Each region's agent URL, as the other regions' coordinators use it."
  value = {
    for m in [module.region_a, module.region_b, module.region_c] : m.region_name => m.agent_endpoint
  }
}

output "coordinator_endpoints" {
  description = "Each region's coordinator gRPC URLs (lockctl --endpoint, globallock_client::Client::connect)."
  value = {
    for m in [module.region_a, module.region_b, module.region_c] : m.region_name => m.coordinator_endpoints
  }
}

output "etcd_endpoints" {
  description = "Each region's etcd client URLs by shard (reachable only from that region's agent)."
  value = {
    for m in [module.region_a, module.region_b, module.region_c] : m.region_name => m.etcd_endpoints
  }
}

output "egress_ips" {
  description = "Each region's coordinator egress addresses (what the other regions' agents admit)."
  value       = local.egress
}

output "coordinators_srv_name" {
  description = "The SRV name listing every coordinator."
  value       = module.dns.coordinators_srv_name
}

output "agent_srv_names" {
  description = "The SRV name of each region's agent."
  value       = module.dns.agent_srv_names
}
