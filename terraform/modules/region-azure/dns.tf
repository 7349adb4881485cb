# The region's subzone <region>.<dns_zone>, delegated from dns_zone by modules/dns:
#   agent.<region>.<zone>                  A    the agent's public address
#   _globallock-agent._tcp.<region>.<zone> SRV  0 0 7411 agent.<region>.<zone>.
#   coordinator-N.<region>.<zone>          A    each coordinator's private address
#   _globallock._tcp.<region>.<zone>       SRV  this region's coordinators, port 7400
# (modules/dns adds _globallock._tcp.<zone> with every region's coordinators.)

resource "azurerm_dns_zone" "region" {
  name                = local.subzone
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_dns_a_record" "agent" {
  name                = "agent"
  zone_name           = azurerm_dns_zone.region.name
  resource_group_name = azurerm_resource_group.main.name
  ttl                 = 60
  records             = [azurerm_public_ip.agent.ip_address]
  tags                = local.tags
}

resource "azurerm_dns_srv_record" "agent" {
  name                = "_globallock-agent._tcp"
  zone_name           = azurerm_dns_zone.region.name
  resource_group_name = azurerm_resource_group.main.name
  ttl                 = 60
  tags                = local.tags

  record {
    priority = 0
    weight   = 0
    port     = 7411
    target   = "agent.${local.subzone}."
  }
}

resource "azurerm_dns_a_record" "coordinator" {
  for_each            = local.coordinators
  name                = "coordinator-${each.key}"
  zone_name           = azurerm_dns_zone.region.name
  resource_group_name = azurerm_resource_group.main.name
  ttl                 = 60
  records             = [each.value.ip]
  tags                = local.tags
}

resource "azurerm_dns_srv_record" "coordinator" {
  name                = "_globallock._tcp"
  zone_name           = azurerm_dns_zone.region.name
  resource_group_name = azurerm_resource_group.main.name
  ttl                 = 60
  tags                = local.tags

  dynamic "record" {
    for_each = local.coordinators
    content {
      priority = 10
      weight   = 10
      port     = 7400
      target   = "coordinator-${record.key}.${local.subzone}."
    }
  }
}
