output "coordinators" {
  description = "Every coordinator: index, zone (index into node_cidrs) and private address."
  value       = local.coordinators
}

output "etcd_members" {
  description = "Every etcd member: key (shard-S-M), name, shard, index, zone (index into node_cidrs) and private address."
  value       = local.etcd_members
}

output "etcd_endpoints" {
  description = "Client URLs of each shard's etcd members, by shard name."
  value       = local.etcd_endpoints
}

output "agent_toml" {
  description = "The agent's configuration file (/etc/globallock/agent.toml)."
  value       = local.agent_toml
}

output "coordinator_toml" {
  description = "The coordinators' configuration file (/etc/globallock/coordinator.toml)."
  value       = local.coordinator_toml
}

output "etcd_user_data" {
  description = "cloud-init user data of each etcd member, by key (shard-S-M) (contains the members' TLS key)."
  value       = local.etcd_user_data
  sensitive   = true
}

output "agent_user_data" {
  description = "cloud-init user data of the agent (contains its TLS keys, the agent API's and etcd's)."
  value       = local.agent_user_data
  sensitive   = true
}

output "coordinator_user_data" {
  description = "cloud-init user data of every coordinator (contains the TLS key)."
  value       = local.coordinator_user_data
  sensitive   = true
}
