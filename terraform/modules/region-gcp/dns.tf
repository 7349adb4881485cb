# The region's subzone <region>.<dns_zone>, delegated from dns_zone by modules/dns:
#   agent.<region>.<zone>                  A    the agent's public address
#   _globallock-agent._tcp.<region>.<zone> SRV  0 0 7411 agent.<region>.<zone>.
#   coordinator-N.<region>.<zone>          A    each coordinator's private address
#   _globallock._tcp.<region>.<zone>       SRV  this region's coordinators, port 7400
# (modules/dns adds _globallock._tcp.<zone> with every region's coordinators.)

resource "google_dns_managed_zone" "region" {
  name        = local.name
  dns_name    = "${local.subzone}."
  description = "globallock region ${var.region_name}"
  visibility  = "public"
  labels      = local.labels

  dnssec_config {
    state = "on"

    default_key_specs {
      algorithm  = "rsasha256"
      key_length = 2048
      key_type   = "keySigning"
    }

    default_key_specs {
      algorithm  = "rsasha256"
      key_length = 1024
      key_type   = "zoneSigning"
    }
  }
}

resource "google_dns_record_set" "agent" {
  managed_zone = google_dns_managed_zone.region.name
  name         = "agent.${local.subzone}."
  type         = "A"
  ttl          = 60
  rrdatas      = [google_compute_address.agent.address]
}

resource "google_dns_record_set" "agent_srv" {
  managed_zone = google_dns_managed_zone.region.name
  name         = "_globallock-agent._tcp.${local.subzone}."
  type         = "SRV"
  ttl          = 60
  rrdatas      = ["0 0 7411 agent.${local.subzone}."]
}

resource "google_dns_record_set" "coordinator" {
  count        = var.coordinator_count
  managed_zone = google_dns_managed_zone.region.name
  name         = "coordinator-${count.index}.${local.subzone}."
  type         = "A"
  ttl          = 60
  rrdatas      = [google_compute_instance.coordinator[count.index].network_interface[0].network_ip]
}

resource "google_dns_record_set" "coordinator_srv" {
  managed_zone = google_dns_managed_zone.region.name
  name         = "_globallock._tcp.${local.subzone}."
  type         = "SRV"
  ttl          = 60
  rrdatas      = [for i in range(var.coordinator_count) : "10 10 7400 coordinator-${i}.${local.subzone}."]
}
