# Each hop's ports, open only to the peers that need them:
#   clients (client_cidrs)             -> coordinators 7400 (gRPC), 7480 (REST)
#   this region's coordinators         -> agent 7411
#   other regions (agent_client_cidrs) -> agent 7411
#   the agent                          -> etcd 2379
#   members of the same shard          -> etcd 2380
#   Prometheus (prometheus_cidrs)      -> 7490, 7491, 2381
# Egress is as narrow: the hops above and HTTP(S) (packages, the image); the rest
# is denied by the lowest-priority rule.

resource "google_compute_firewall" "coordinator_clients" {
  name          = "${local.name}-coordinator-clients"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = local.client_cidrs
  target_tags   = [local.tag_coordinator]

  allow {
    protocol = "tcp"
    ports    = ["7400", "7480"]
  }
}

resource "google_compute_firewall" "agent_from_coordinators" {
  name        = "${local.name}-agent-from-coordinators"
  network     = google_compute_network.main.id
  direction   = "INGRESS"
  source_tags = [local.tag_coordinator]
  target_tags = [local.tag_agent]

  allow {
    protocol = "tcp"
    ports    = ["7411"]
  }
}

resource "google_compute_firewall" "agent_from_regions" {
  count         = length(var.agent_client_cidrs) > 0 ? 1 : 0
  name          = "${local.name}-agent-from-regions"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = var.agent_client_cidrs
  target_tags   = [local.tag_agent]

  allow {
    protocol = "tcp"
    ports    = ["7411"]
  }
}

resource "google_compute_firewall" "etcd_client" {
  name        = "${local.name}-etcd-client"
  network     = google_compute_network.main.id
  direction   = "INGRESS"
  source_tags = [local.tag_agent]
  target_tags = [local.tag_etcd]

  allow {
    protocol = "tcp"
    ports    = ["2379"]
  }
}

resource "google_compute_firewall" "etcd_peer" {
  for_each    = local.tag_shard
  name        = "${local.name}-etcd-peer-${each.key}"
  network     = google_compute_network.main.id
  direction   = "INGRESS"
  source_tags = [each.value]
  target_tags = [each.value]

  allow {
    protocol = "tcp"
    ports    = ["2380"]
  }
}

resource "google_compute_firewall" "metrics" {
  for_each = length(var.prometheus_cidrs) > 0 ? {
    coordinator = { tag = local.tag_coordinator, port = "7490" }
    agent       = { tag = local.tag_agent, port = "7491" }
    etcd        = { tag = local.tag_etcd, port = "2381" }
  } : {}
  name          = "${local.name}-metrics-${each.key}"
  network       = google_compute_network.main.id
  direction     = "INGRESS"
  source_ranges = var.prometheus_cidrs
  target_tags   = [each.value.tag]

  allow {
    protocol = "tcp"
    ports    = [each.value.port]
  }
}

resource "google_compute_firewall" "egress_http" {
  name               = "${local.name}-egress-http"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = ["0.0.0.0/0"]
  target_tags        = [local.tag_coordinator, local.tag_agent, local.tag_etcd]

  allow {
    protocol = "tcp"
    ports    = ["80", "443"]
  }
}

resource "google_compute_firewall" "egress_coordinator_agents" {
  name               = "${local.name}-egress-coordinator-agents"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = ["0.0.0.0/0"]
  target_tags        = [local.tag_coordinator]

  allow {
    protocol = "tcp"
    ports    = ["7411"]
  }
}

resource "google_compute_firewall" "egress_agent_etcd" {
  name               = "${local.name}-egress-agent-etcd"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = local.node_cidrs
  target_tags        = [local.tag_agent]

  allow {
    protocol = "tcp"
    ports    = ["2379"]
  }
}

resource "google_compute_firewall" "egress_etcd_peer" {
  name               = "${local.name}-egress-etcd-peer"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = local.node_cidrs
  target_tags        = [local.tag_etcd]

  allow {
    protocol = "tcp"
    ports    = ["2380"]
  }
}

resource "google_compute_firewall" "egress_deny" {
  name               = "${local.name}-egress-deny"
  network            = google_compute_network.main.id
  direction          = "EGRESS"
  priority           = 65000
  destination_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }
}
