# The deployment-wide records in dns_zone (hosted in Route 53):
#   <region>.<zone>     NS   each region's subzone, delegated to the DNS of the
#                            cloud that region runs on (its region module made it)
#   _globallock._tcp.<zone>  SRV  every coordinator of every region, port 7400:
#                            what clients and lockctl look up to find coordinators
# The per-region records (agent.<region>.<zone>, _globallock-agent._tcp.<region>.<zone>,
# coordinator-N.<region>.<zone>, _globallock._tcp.<region>.<zone>) live in the
# subzones.

resource "aws_route53_record" "delegation" {
  for_each = { for r in var.regions : r.region_name => r }
  zone_id  = var.zone_id
  name     = each.value.dns_subzone
  type     = "NS"
  ttl      = var.delegation_ttl
  # Name servers as the clouds report them, each with its final dot.
  records = [for ns in each.value.dns_name_servers : endswith(ns, ".") ? ns : "${ns}."]
}

resource "aws_route53_record" "coordinators_srv" {
  zone_id = var.zone_id
  name    = "_globallock._tcp.${var.dns_zone}"
  type    = "SRV"
  ttl     = var.ttl
  # Equal priority and weight: clients spread over all coordinators. A client that
  # prefers its own region's coordinators looks up _globallock._tcp.<region>.<zone>.
  records = flatten([
    for r in var.regions : [for host in r.coordinator_hosts : "10 10 7400 ${host}."]
  ])
}
