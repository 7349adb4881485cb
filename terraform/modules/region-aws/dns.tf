# The region's subzone <region>.<dns_zone>, delegated from dns_zone by modules/dns:
#   agent.<region>.<zone>                  A    the agent's public address
#   _globallock-agent._tcp.<region>.<zone> SRV  0 0 7411 agent.<region>.<zone>.
#   coordinator-N.<region>.<zone>          A    each coordinator's private address
#   _globallock._tcp.<region>.<zone>       SRV  this region's coordinators, port 7400
# (modules/dns adds _globallock._tcp.<zone> with every region's coordinators.)

resource "aws_route53_zone" "region" {
  #checkov:skip=CKV2_AWS_38:DNSSEC signing needs a KMS key in us-east-1 and a DS record in the parent zone, both the account's choice; the records are addresses the agents' and coordinators' TLS authenticates (issue: security).
  #checkov:skip=CKV2_AWS_39:Query logging needs a CloudWatch log group in us-east-1 with the account's retention and encryption policy.
  name          = local.subzone
  comment       = "globallock region ${var.region_name}"
  force_destroy = false
  tags          = local.tags
}

resource "aws_route53_record" "agent" {
  zone_id = aws_route53_zone.region.zone_id
  name    = "agent.${local.subzone}"
  type    = "A"
  ttl     = 60
  records = [aws_eip.agent.public_ip]
}

resource "aws_route53_record" "agent_srv" {
  zone_id = aws_route53_zone.region.zone_id
  name    = "_globallock-agent._tcp.${local.subzone}"
  type    = "SRV"
  ttl     = 60
  records = ["0 0 7411 agent.${local.subzone}."]
}

resource "aws_route53_record" "coordinator" {
  count   = var.coordinator_count
  zone_id = aws_route53_zone.region.zone_id
  name    = "coordinator-${count.index}.${local.subzone}"
  type    = "A"
  ttl     = 60
  records = [aws_instance.coordinator[count.index].private_ip]
}

resource "aws_route53_record" "coordinator_srv" {
  zone_id = aws_route53_zone.region.zone_id
  name    = "_globallock._tcp.${local.subzone}"
  type    = "SRV"
  ttl     = 60
  records = [for i in range(var.coordinator_count) : "10 10 7400 coordinator-${i}.${local.subzone}."]
}
