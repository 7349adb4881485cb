resource "azurerm_virtual_network" "main" {
  name                = local.name
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = [var.network_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "edge" {
  name                            = "edge"
  resource_group_name             = azurerm_resource_group.main.name
  virtual_network_name            = azurerm_virtual_network.main.name
  address_prefixes                = [local.edge_cidr]
  default_outbound_access_enabled = false
}

resource "azurerm_subnet" "nodes" {
  count                           = 3
  name                            = "nodes-${count.index}"
  resource_group_name             = azurerm_resource_group.main.name
  virtual_network_name            = azurerm_virtual_network.main.name
  address_prefixes                = [local.node_cidrs[count.index]]
  default_outbound_access_enabled = false
}

# Coordinators and etcd members reach the internet (packages, the image, the other
# regions' agents) from this address: the region's egress_ips output.
resource "azurerm_public_ip" "nat" {
  name                = "${local.name}-nat"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  allocation_method   = "Static"
  sku                 = "Standard"
  # No zone: a NAT gateway takes no zone-redundant address.
  tags = local.tags
}

resource "azurerm_nat_gateway" "main" {
  name                    = local.name
  location                = azurerm_resource_group.main.location
  resource_group_name     = azurerm_resource_group.main.name
  sku_name                = "Standard"
  idle_timeout_in_minutes = 10
  tags                    = local.tags
}

resource "azurerm_nat_gateway_public_ip_association" "main" {
  nat_gateway_id       = azurerm_nat_gateway.main.id
  public_ip_address_id = azurerm_public_ip.nat.id
}

resource "azurerm_subnet_nat_gateway_association" "nodes" {
  count          = 3
  subnet_id      = azurerm_subnet.nodes[count.index].id
  nat_gateway_id = azurerm_nat_gateway.main.id
}
