# Every instance: Ubuntu 24.04 LTS (cloud-init reads the user-data metadata key),
# Shielded VM, no project-wide SSH keys (OS Login only), no serial port, and a
# service account of its own that holds no role (never the default compute
# account, which is an Editor).
#
# cloud-init applies user data at the first boot only. So: coordinators (stateless)
# are replaced when their configuration or image changes; the agent and etcd
# members keep state on their disks and are never replaced by a plan (their image
# and user data changes are ignored): change them as docs/deploy.md ("Changing a
# running region") says.

resource "google_service_account" "node" {
  account_id   = substr("${local.name}-node", 0, 30)
  display_name = "globallock ${var.region_name} instances (no roles)"
}

locals {
  image   = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
  root_gb = { etcd = 30, agent = 20, coordinator = 20 }
}

resource "terraform_data" "coordinator_config" {
  input = sha256(module.node_config.coordinator_user_data)
}

resource "google_compute_instance" "etcd" {
  #checkov:skip=CKV_GCP_38:Boot disks are encrypted by Google-managed keys; customer-supplied keys would have to be given to every boot and are the project's key-management choice.
  for_each = { for m in module.node_config.etcd_members : m.key => m }

  name         = "${local.name}-etcd-${each.key}"
  machine_type = var.instance_sizes.etcd
  zone         = local.zones[each.value.zone]
  tags         = [local.tag_etcd, local.tag_shard[each.value.shard]]
  labels       = merge(local.labels, { globallock-role = "etcd" })

  boot_disk {
    initialize_params {
      image = local.image
      size  = local.root_gb.etcd
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.nodes[each.value.zone].id
    network_ip = each.value.ip
  }

  metadata = {
    block-project-ssh-keys = "true"
    serial-port-enable     = "false"
    enable-oslogin         = "TRUE"
    user-data              = module.node_config.etcd_user_data[each.key]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.node.email
    scopes = ["https://www.googleapis.com/auth/logging.write", "https://www.googleapis.com/auth/monitoring.write"]
  }

  lifecycle {
    ignore_changes = [boot_disk[0].initialize_params[0].image, metadata["user-data"]]
  }
}

# The other regions' coordinators reach the agent at this address (agent.<region>.<zone>).
resource "google_compute_address" "agent" {
  name         = "${local.name}-agent"
  region       = var.location
  address_type = "EXTERNAL"
  labels       = local.labels
}

resource "google_compute_instance" "agent" {
  #checkov:skip=CKV_GCP_38:Boot disks are encrypted by Google-managed keys; customer-supplied keys are the project's key-management choice.
  #checkov:skip=CKV_GCP_40:The agent has a public address on purpose: the other regions' coordinators (other clouds) connect to it, and firewall agent_from_regions admits only their egress addresses on 7411.
  name         = "${local.name}-agent"
  machine_type = var.instance_sizes.agent
  zone         = local.zones[0]
  tags         = [local.tag_agent]
  labels       = merge(local.labels, { globallock-role = "agent" })

  boot_disk {
    initialize_params {
      image = local.image
      size  = local.root_gb.agent
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.edge.id
    network_ip = local.agent_private_ip

    access_config {
      nat_ip = google_compute_address.agent.address
    }
  }

  metadata = {
    block-project-ssh-keys = "true"
    serial-port-enable     = "false"
    enable-oslogin         = "TRUE"
    user-data              = module.node_config.agent_user_data
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.node.email
    scopes = ["https://www.googleapis.com/auth/logging.write", "https://www.googleapis.com/auth/monitoring.write"]
  }

  lifecycle {
    ignore_changes = [boot_disk[0].initialize_params[0].image, metadata["user-data"]]
  }

  # Every etcd member first, so the agent finds its shards when it starts.
  depends_on = [google_compute_instance.etcd]
}

resource "google_compute_instance" "coordinator" {
  #checkov:skip=CKV_GCP_38:Boot disks are encrypted by Google-managed keys; customer-supplied keys are the project's key-management choice.
  count = var.coordinator_count

  name         = "${local.name}-coordinator-${count.index}"
  machine_type = var.instance_sizes.coordinator
  zone         = local.zones[module.node_config.coordinators[count.index].zone]
  tags         = [local.tag_coordinator]
  labels       = merge(local.labels, { globallock-role = "coordinator" })

  boot_disk {
    initialize_params {
      image = local.image
      size  = local.root_gb.coordinator
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.nodes[module.node_config.coordinators[count.index].zone].id
    network_ip = module.node_config.coordinators[count.index].ip
  }

  metadata = {
    block-project-ssh-keys = "true"
    serial-port-enable     = "false"
    enable-oslogin         = "TRUE"
    user-data              = module.node_config.coordinator_user_data
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.node.email
    scopes = ["https://www.googleapis.com/auth/logging.write", "https://www.googleapis.com/auth/monitoring.write"]
  }

  lifecycle {
    ignore_changes       = [boot_disk[0].initialize_params[0].image]
    replace_triggered_by = [terraform_data.coordinator_config]
  }
}
