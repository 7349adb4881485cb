resource "google_compute_network" "main" {
  name                    = local.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  lifecycle {
    precondition {
      condition     = length(data.google_compute_zones.available.names) >= 3
      error_message = "The region has fewer than 3 zones up."
    }
  }
}

resource "google_compute_subnetwork" "edge" {
  name                     = "${local.name}-edge"
  region                   = var.location
  network                  = google_compute_network.main.id
  ip_cidr_range            = local.edge_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "nodes" {
  count                    = 3
  name                     = "${local.name}-nodes-${count.index}"
  region                   = var.location
  network                  = google_compute_network.main.id
  ip_cidr_range            = local.node_cidrs[count.index]
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Coordinators and etcd members reach the internet (packages, the image, the other
# regions' agents) from this address: the region's egress_ips output.
resource "google_compute_address" "nat" {
  name         = "${local.name}-nat"
  region       = var.location
  address_type = "EXTERNAL"
  labels       = local.labels
}

resource "google_compute_router" "main" {
  name    = local.name
  region  = var.location
  network = google_compute_network.main.id
}

resource "google_compute_router_nat" "main" {
  name                               = local.name
  router                             = google_compute_router.main.name
  region                             = var.location
  nat_ip_allocate_option             = "MANUAL_ONLY"
  nat_ips                            = [google_compute_address.nat.self_link]
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  dynamic "subnetwork" {
    for_each = google_compute_subnetwork.nodes
    content {
      name                    = subnetwork.value.id
      source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
    }
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}
