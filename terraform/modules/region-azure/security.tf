# Each hop's ports, open only to the peers that need them:
#   clients (client_cidrs)             -> coordinators 7400 (gRPC), 7480 (REST)
#   this region's coordinators         -> agent 7411
#   other regions (agent_client_cidrs) -> agent 7411
#   the agent                          -> etcd 2379
#   members of the same shard          -> etcd 2380
#   Prometheus (prometheus_cidrs)      -> 7490, 7491, 2381
# Egress is as narrow: the hops above, HTTP(S) (packages, the image), and the
# platform's DNS, wire server and metadata endpoints (cloud-init, name resolution).
# Every other flow, in or out (Azure's default VirtualNetwork rules included), is denied
# by the rules at priority 4096.

resource "azurerm_application_security_group" "coordinator" {
  name                = "${local.name}-coordinator"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_application_security_group" "agent" {
  name                = "${local.name}-agent"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_application_security_group" "etcd" {
  name                = "${local.name}-etcd"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_application_security_group" "shard" {
  for_each            = toset(local.shards)
  name                = "${local.name}-etcd-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_network_security_group" "edge" {
  name                = "${local.name}-edge"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_network_security_group" "nodes" {
  name                = "${local.name}-nodes"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_subnet_network_security_group_association" "edge" {
  subnet_id                 = azurerm_subnet.edge.id
  network_security_group_id = azurerm_network_security_group.edge.id
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  count                     = 3
  subnet_id                 = azurerm_subnet.nodes[count.index].id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

locals {
  # Every rule has every field (null where unused): sources and destinations are
  # CIDR lists (prefixes), application security groups (asgs) or a service tag.
  fixed_rules = [
    {
      name    = "agent-from-coordinators", enabled = true, nsg = "edge", direction = "Inbound", priority = 100, access = "Allow", protocol = "Tcp", ports = ["7411"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.coordinator.id], dst_tag = null, dst_asgs = [azurerm_application_security_group.agent.id]
    },
    {
      name    = "agent-from-regions", enabled = length(var.agent_client_cidrs) > 0, nsg = "edge", direction = "Inbound", priority = 110, access = "Allow", protocol = "Tcp", ports = ["7411"]
      src_tag = null, src_prefixes = var.agent_client_cidrs, src_asgs = null, dst_tag = null, dst_asgs = [azurerm_application_security_group.agent.id]
    },
    {
      name    = "agent-metrics", enabled = length(var.prometheus_cidrs) > 0, nsg = "edge", direction = "Inbound", priority = 120, access = "Allow", protocol = "Tcp", ports = ["7491"]
      src_tag = null, src_prefixes = var.prometheus_cidrs, src_asgs = null, dst_tag = null, dst_asgs = [azurerm_application_security_group.agent.id]
    },
    {
      name    = "agent-to-etcd", enabled = true, nsg = "edge", direction = "Outbound", priority = 100, access = "Allow", protocol = "Tcp", ports = ["2379"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.agent.id], dst_tag = null, dst_asgs = [azurerm_application_security_group.etcd.id]
    },
    {
      name    = "edge-http-out", enabled = true, nsg = "edge", direction = "Outbound", priority = 200, access = "Allow", protocol = "Tcp", ports = ["80", "443"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.agent.id], dst_tag = "Internet", dst_asgs = null
    },
    {
      name    = "coordinator-clients", enabled = true, nsg = "nodes", direction = "Inbound", priority = 100, access = "Allow", protocol = "Tcp", ports = ["7400", "7480"]
      src_tag = null, src_prefixes = local.client_cidrs, src_asgs = null, dst_tag = null, dst_asgs = [azurerm_application_security_group.coordinator.id]
    },
    {
      name    = "etcd-from-agent", enabled = true, nsg = "nodes", direction = "Inbound", priority = 110, access = "Allow", protocol = "Tcp", ports = ["2379"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.agent.id], dst_tag = null, dst_asgs = [azurerm_application_security_group.etcd.id]
    },
    {
      name    = "coordinator-metrics", enabled = length(var.prometheus_cidrs) > 0, nsg = "nodes", direction = "Inbound", priority = 120, access = "Allow", protocol = "Tcp", ports = ["7490"]
      src_tag = null, src_prefixes = var.prometheus_cidrs, src_asgs = null, dst_tag = null, dst_asgs = [azurerm_application_security_group.coordinator.id]
    },
    {
      name    = "etcd-metrics", enabled = length(var.prometheus_cidrs) > 0, nsg = "nodes", direction = "Inbound", priority = 130, access = "Allow", protocol = "Tcp", ports = ["2381"]
      src_tag = null, src_prefixes = var.prometheus_cidrs, src_asgs = null, dst_tag = null, dst_asgs = [azurerm_application_security_group.etcd.id]
    },
    {
      name    = "coordinator-to-agents", enabled = true, nsg = "nodes", direction = "Outbound", priority = 100, access = "Allow", protocol = "Tcp", ports = ["7411"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.coordinator.id], dst_tag = "*", dst_asgs = null
    },
    {
      name    = "nodes-http-out", enabled = true, nsg = "nodes", direction = "Outbound", priority = 200, access = "Allow", protocol = "Tcp", ports = ["80", "443"]
      src_tag = null, src_prefixes = local.node_cidrs, src_asgs = null, dst_tag = "Internet", dst_asgs = null
    },
    {
      name    = "edge-platform-out", enabled = true, nsg = "edge", direction = "Outbound", priority = 300, access = "Allow", protocol = "*", ports = ["53", "80", "32526"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "168.63.129.16/32", dst_asgs = null
    },
    {
      name    = "edge-metadata-out", enabled = true, nsg = "edge", direction = "Outbound", priority = 301, access = "Allow", protocol = "Tcp", ports = ["80"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "169.254.169.254/32", dst_asgs = null
    },
    {
      name    = "nodes-platform-out", enabled = true, nsg = "nodes", direction = "Outbound", priority = 400, access = "Allow", protocol = "*", ports = ["53", "80", "32526"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "168.63.129.16/32", dst_asgs = null
    },
    {
      name    = "nodes-metadata-out", enabled = true, nsg = "nodes", direction = "Outbound", priority = 401, access = "Allow", protocol = "Tcp", ports = ["80"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "169.254.169.254/32", dst_asgs = null
    },
    {
      name    = "edge-deny-in", enabled = true, nsg = "edge", direction = "Inbound", priority = 4096, access = "Deny", protocol = "*", ports = ["*"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "*", dst_asgs = null
    },
    {
      name    = "edge-deny-out", enabled = true, nsg = "edge", direction = "Outbound", priority = 4096, access = "Deny", protocol = "*", ports = ["*"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "*", dst_asgs = null
    },
    {
      name    = "nodes-deny-in", enabled = true, nsg = "nodes", direction = "Inbound", priority = 4096, access = "Deny", protocol = "*", ports = ["*"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "*", dst_asgs = null
    },
    {
      name    = "nodes-deny-out", enabled = true, nsg = "nodes", direction = "Outbound", priority = 4096, access = "Deny", protocol = "*", ports = ["*"]
      src_tag = "*", src_prefixes = null, src_asgs = null, dst_tag = "*", dst_asgs = null
    },
  ]

  shard_rules = flatten([for i, shard in local.shards : [
    {
      name    = "etcd-peer-in-${shard}", enabled = true, nsg = "nodes", direction = "Inbound", priority = 200 + i, access = "Allow", protocol = "Tcp", ports = ["2380"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.shard[shard].id], dst_tag = null, dst_asgs = [azurerm_application_security_group.shard[shard].id]
    },
    {
      name    = "etcd-peer-out-${shard}", enabled = true, nsg = "nodes", direction = "Outbound", priority = 300 + i, access = "Allow", protocol = "Tcp", ports = ["2380"]
      src_tag = null, src_prefixes = null, src_asgs = [azurerm_application_security_group.shard[shard].id], dst_tag = null, dst_asgs = [azurerm_application_security_group.shard[shard].id]
    },
  ]])

  nsg_rules = { for r in concat(local.fixed_rules, local.shard_rules) : r.name => r if r.enabled }
}

resource "azurerm_network_security_rule" "rule" {
  for_each                                   = local.nsg_rules
  name                                       = each.key
  resource_group_name                        = azurerm_resource_group.main.name
  network_security_group_name                = each.value.nsg == "edge" ? azurerm_network_security_group.edge.name : azurerm_network_security_group.nodes.name
  direction                                  = each.value.direction
  priority                                   = each.value.priority
  access                                     = each.value.access
  protocol                                   = each.value.protocol
  source_port_range                          = "*"
  destination_port_ranges                    = each.value.ports
  source_address_prefix                      = each.value.src_tag
  source_address_prefixes                    = each.value.src_prefixes
  source_application_security_group_ids      = each.value.src_asgs
  destination_address_prefix                 = each.value.dst_tag
  destination_application_security_group_ids = each.value.dst_asgs
}
