# Each hop's ports, open only to the peers that need them:
#   clients (client_cidrs)             -> coordinators 7400 (gRPC), 7480 (REST)
#   this region's coordinators         -> agent 7411
#   other regions (agent_client_cidrs) -> agent 7411
#   the agent                          -> etcd 2379
#   members of the same shard          -> etcd 2380
#   Prometheus (prometheus_cidrs)      -> 7490, 7491, 2381
# Egress is as narrow: the hops above, plus HTTP(S) for packages and the image.

resource "aws_security_group" "coordinator" {
  name        = "${local.name}-coordinator"
  description = "globallock coordinators of ${var.region_name}"
  vpc_id      = aws_vpc.main.id
  tags        = merge(local.tags, { Name = "${local.name}-coordinator" })
}

resource "aws_security_group" "agent" {
  name        = "${local.name}-agent"
  description = "globallock agent of ${var.region_name}"
  vpc_id      = aws_vpc.main.id
  tags        = merge(local.tags, { Name = "${local.name}-agent" })
}

resource "aws_security_group" "etcd" {
  for_each    = toset(keys(module.node_config.etcd_endpoints))
  name        = "${local.name}-etcd-${each.key}"
  description = "etcd members of ${each.key} in ${var.region_name}"
  vpc_id      = aws_vpc.main.id
  tags        = merge(local.tags, { Name = "${local.name}-etcd-${each.key}" })
}

# Coordinators.
resource "aws_vpc_security_group_ingress_rule" "coordinator_grpc" {
  for_each          = toset(local.client_cidrs)
  security_group_id = aws_security_group.coordinator.id
  description       = "gRPC API from clients"
  ip_protocol       = "tcp"
  from_port         = 7400
  to_port           = 7400
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_rest" {
  for_each          = toset(local.client_cidrs)
  security_group_id = aws_security_group.coordinator.id
  description       = "REST API from clients"
  ip_protocol       = "tcp"
  from_port         = 7480
  to_port           = 7480
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_metrics" {
  for_each          = toset(var.prometheus_cidrs)
  security_group_id = aws_security_group.coordinator.id
  description       = "metrics from Prometheus"
  ip_protocol       = "tcp"
  from_port         = 7490
  to_port           = 7490
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "coordinator_agents" {
  security_group_id = aws_security_group.coordinator.id
  description       = "every region's agent (the other regions at their public addresses)"
  ip_protocol       = "tcp"
  from_port         = 7411
  to_port           = 7411
  cidr_ipv4         = "0.0.0.0/0"
}

# The agent.
resource "aws_vpc_security_group_ingress_rule" "agent_from_coordinators" {
  security_group_id            = aws_security_group.agent.id
  description                  = "agent API from this region's coordinators"
  ip_protocol                  = "tcp"
  from_port                    = 7411
  to_port                      = 7411
  referenced_security_group_id = aws_security_group.coordinator.id
}

resource "aws_vpc_security_group_ingress_rule" "agent_from_regions" {
  for_each          = toset(var.agent_client_cidrs)
  security_group_id = aws_security_group.agent.id
  description       = "agent API from the other regions' coordinators"
  ip_protocol       = "tcp"
  from_port         = 7411
  to_port           = 7411
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "agent_metrics" {
  for_each          = toset(var.prometheus_cidrs)
  security_group_id = aws_security_group.agent.id
  description       = "metrics from Prometheus"
  ip_protocol       = "tcp"
  from_port         = 7491
  to_port           = 7491
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "agent_etcd" {
  for_each                     = aws_security_group.etcd
  security_group_id            = aws_security_group.agent.id
  description                  = "etcd clients of ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2379
  referenced_security_group_id = each.value.id
}

# etcd members.
resource "aws_vpc_security_group_ingress_rule" "etcd_client" {
  for_each                     = aws_security_group.etcd
  security_group_id            = each.value.id
  description                  = "etcd client port from the agent"
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2379
  referenced_security_group_id = aws_security_group.agent.id
}

resource "aws_vpc_security_group_ingress_rule" "etcd_peer" {
  for_each                     = aws_security_group.etcd
  security_group_id            = each.value.id
  description                  = "etcd peer port from members of the same shard"
  ip_protocol                  = "tcp"
  from_port                    = 2380
  to_port                      = 2380
  referenced_security_group_id = each.value.id
}

resource "aws_vpc_security_group_egress_rule" "etcd_peer" {
  for_each                     = aws_security_group.etcd
  security_group_id            = each.value.id
  description                  = "etcd peer port to members of the same shard"
  ip_protocol                  = "tcp"
  from_port                    = 2380
  to_port                      = 2380
  referenced_security_group_id = each.value.id
}

resource "aws_vpc_security_group_ingress_rule" "etcd_metrics" {
  for_each = {
    for pair in setproduct(keys(aws_security_group.etcd), var.prometheus_cidrs) : "${pair[0]}/${pair[1]}" => {
      shard = pair[0]
      cidr  = pair[1]
    }
  }
  security_group_id = aws_security_group.etcd[each.value.shard].id
  description       = "etcd metrics from Prometheus"
  ip_protocol       = "tcp"
  from_port         = 2381
  to_port           = 2381
  cidr_ipv4         = each.value.cidr
}

# Packages (apt over HTTP and HTTPS) and the container image (HTTPS), for every node.
resource "aws_vpc_security_group_egress_rule" "http" {
  for_each = merge(
    { coordinator = aws_security_group.coordinator.id, agent = aws_security_group.agent.id },
    { for shard, sg in aws_security_group.etcd : "etcd-${shard}" => sg.id },
  )
  security_group_id = each.value
  description       = "package mirrors (HTTP)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each = merge(
    { coordinator = aws_security_group.coordinator.id, agent = aws_security_group.agent.id },
    { for shard, sg in aws_security_group.etcd : "etcd-${shard}" => sg.id },
  )
  security_group_id = each.value
  description       = "package mirrors and the image registry (HTTPS)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
