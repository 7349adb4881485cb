# Every VM: Ubuntu 24.04 LTS (cloud-init reads custom_data), Trusted Launch
# (secure boot, vTPM), no password, no VM extensions, a static private address and
# the application security groups the NSG rules name. Managed disks are encrypted
# at rest with platform keys; encryption at host is not turned on, since it needs
# the EncryptionAtHost feature registered on the subscription.
#
# Azure needs an SSH key for a Linux VM. The one below is generated and never
# output: nobody logs in with it (use `az vm run-command` or Azure Bastion). Its
# private half is in the terraform state, like the TLS key; protect the state.
#
# cloud-init applies custom_data at the first boot only, and a change of it
# replaces a VM. So: coordinators (stateless) are replaced when their
# configuration or image changes; the agent and etcd members keep state on their
# disks and ignore such changes: change them as docs/deploy.md ("Changing a running
# region") says.

resource "tls_private_key" "admin" {
  algorithm = "ED25519"
}

locals {
  admin_user = "globallock-admin"
  root_gb    = { etcd = 32, agent = 32, coordinator = 32 }

  coordinators = { for c in module.node_config.coordinators : tostring(c.index) => c }
  etcd_members = { for m in module.node_config.etcd_members : m.key => m }
}

# etcd members.
resource "azurerm_network_interface" "etcd" {
  for_each            = local.etcd_members
  name                = "${local.name}-etcd-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.nodes[each.value.zone].id
    private_ip_address_allocation = "Static"
    private_ip_address            = each.value.ip
  }
}

resource "azurerm_network_interface_application_security_group_association" "etcd" {
  for_each                      = local.etcd_members
  network_interface_id          = azurerm_network_interface.etcd[each.key].id
  application_security_group_id = azurerm_application_security_group.etcd.id
}

resource "azurerm_network_interface_application_security_group_association" "etcd_shard" {
  for_each                      = local.etcd_members
  network_interface_id          = azurerm_network_interface.etcd[each.key].id
  application_security_group_id = azurerm_application_security_group.shard[each.value.shard].id
}

resource "azurerm_linux_virtual_machine" "etcd" {
  for_each                        = local.etcd_members
  name                            = "${local.name}-etcd-${each.key}"
  location                        = azurerm_resource_group.main.location
  resource_group_name             = azurerm_resource_group.main.name
  size                            = var.instance_sizes.etcd
  zone                            = local.zones[each.value.zone]
  network_interface_ids           = [azurerm_network_interface.etcd[each.key].id]
  admin_username                  = local.admin_user
  disable_password_authentication = true
  allow_extension_operations      = false
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  custom_data                     = base64encode(module.node_config.etcd_user_data[each.key])
  tags                            = merge(local.tags, { "globallock-role" = "etcd" })

  admin_ssh_key {
    username   = local.admin_user
    public_key = tls_private_key.admin.public_key_openssh
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = local.root_gb.etcd
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }

  lifecycle {
    ignore_changes = [custom_data]
  }
}

# The agent, with a public address: the other regions' coordinators reach it there
# (agent.<region>.<zone>), admitted by rule agent-from-regions only.
resource "azurerm_public_ip" "agent" {
  name                = "${local.name}-agent"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  allocation_method   = "Static"
  sku                 = "Standard"
  zones               = [local.zones[0]]
  tags                = local.tags
}

resource "azurerm_network_interface" "agent" {
  #checkov:skip=CKV_AZURE_119:The agent has a public address on purpose: the other regions' coordinators (other clouds) connect to it, and the edge NSG admits only their egress addresses on 7411.
  name                = "${local.name}-agent"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.edge.id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.agent_private_ip
    public_ip_address_id          = azurerm_public_ip.agent.id
  }
}

resource "azurerm_network_interface_application_security_group_association" "agent" {
  network_interface_id          = azurerm_network_interface.agent.id
  application_security_group_id = azurerm_application_security_group.agent.id
}

resource "azurerm_linux_virtual_machine" "agent" {
  name                            = "${local.name}-agent"
  location                        = azurerm_resource_group.main.location
  resource_group_name             = azurerm_resource_group.main.name
  size                            = var.instance_sizes.agent
  zone                            = local.zones[0]
  network_interface_ids           = [azurerm_network_interface.agent.id]
  admin_username                  = local.admin_user
  disable_password_authentication = true
  allow_extension_operations      = false
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  custom_data                     = base64encode(module.node_config.agent_user_data)
  tags                            = merge(local.tags, { "globallock-role" = "agent" })

  admin_ssh_key {
    username   = local.admin_user
    public_key = tls_private_key.admin.public_key_openssh
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = local.root_gb.agent
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }

  lifecycle {
    ignore_changes = [custom_data]
  }

  # Every etcd member first, so the agent finds its shards when it starts.
  depends_on = [azurerm_linux_virtual_machine.etcd]
}

# Coordinators.
resource "azurerm_network_interface" "coordinator" {
  for_each            = local.coordinators
  name                = "${local.name}-coordinator-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.nodes[each.value.zone].id
    private_ip_address_allocation = "Static"
    private_ip_address            = each.value.ip
  }
}

resource "azurerm_network_interface_application_security_group_association" "coordinator" {
  for_each                      = local.coordinators
  network_interface_id          = azurerm_network_interface.coordinator[each.key].id
  application_security_group_id = azurerm_application_security_group.coordinator.id
}

resource "azurerm_linux_virtual_machine" "coordinator" {
  for_each                        = local.coordinators
  name                            = "${local.name}-coordinator-${each.key}"
  location                        = azurerm_resource_group.main.location
  resource_group_name             = azurerm_resource_group.main.name
  size                            = var.instance_sizes.coordinator
  zone                            = local.zones[each.value.zone]
  network_interface_ids           = [azurerm_network_interface.coordinator[each.key].id]
  admin_username                  = local.admin_user
  disable_password_authentication = true
  allow_extension_operations      = false
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  custom_data                     = base64encode(module.node_config.coordinator_user_data)
  tags                            = merge(local.tags, { "globallock-role" = "coordinator" })

  admin_ssh_key {
    username   = local.admin_user
    public_key = tls_private_key.admin.public_key_openssh
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = local.root_gb.coordinator
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }
}
