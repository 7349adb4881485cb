output "coordinators_srv_name" {
  description = "The SRV name clients look up to find every coordinator: _globallock._tcp.<zone>."
  value       = aws_route53_record.coordinators_srv.fqdn
}

output "agent_srv_names" {
  description = "By region: the SRV name that locates its agent, _globallock-agent._tcp.<region>.<zone> (in the delegated subzone)."
  value       = { for r in var.regions : r.region_name => "_globallock-agent._tcp.${r.dns_subzone}" }
}

output "delegated_subzones" {
  description = "By region: the subzone delegated from dns_zone."
  value       = { for name, record in aws_route53_record.delegation : name => record.name }
}
