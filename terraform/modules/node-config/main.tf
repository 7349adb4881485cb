locals {
  zones = length(var.node_cidrs)

  coordinators = [for i in range(var.coordinator_count) : {
    index = i
    zone  = i % local.zones
    ip    = cidrhost(var.node_cidrs[i % local.zones], 20 + i)
  }]

  etcd_members = flatten([
    for s in range(var.shard_count) : [
      for m in range(var.etcd_members_per_shard) : {
        key   = "shard-${s}-${m}"
        name  = "${var.region_name}-shard-${s}-${m}"
        shard = "shard-${s}"
        index = m
        zone  = m % local.zones
        ip    = cidrhost(var.node_cidrs[m % local.zones], 100 + s * var.etcd_members_per_shard + m)
      }
    ]
  ])

  shards = [for s in range(var.shard_count) : "shard-${s}"]

  # TLS (--client-cert-auth): the agent checks that every member proves
  # <region>.etcd.globallock, whichever address it dials.
  etcd_endpoints = {
    for shard in local.shards : shard => [
      for m in local.etcd_members : "https://${m.ip}:2379" if m.shard == shard
    ]
  }

  agent_toml = templatefile("${path.module}/templates/agent.toml.tftpl", {
    region         = var.region_name
    etcd_endpoints = local.etcd_endpoints
  })

  coordinator_toml = templatefile("${path.module}/templates/coordinator.toml.tftpl", {
    shards = local.shards
    access = var.access
    # TLS: each agent proves <region>.agent.globallock, whatever address is dialled.
    regions = [for r in var.all_regions : {
      name     = r
      endpoint = r == var.region_name ? "https://${var.agent_private_ip}:7411" : "https://agent.${r}.${var.dns_zone}:7411"
    }]
  })

  # The hardened units and system user shipped in deploy/systemd, used as they are.
  systemd_dir = "${path.module}/../../../deploy/systemd"

  # Every member serves the region's etcd member certificate on its client and
  # peer ports, and admits only certificates of the region's etcd CA on both.
  etcd_user_data = {
    for m in local.etcd_members : m.key => templatefile("${path.module}/templates/etcd.cloud-init.yaml.tftpl", {
      name  = m.name
      ip    = m.ip
      token = "${var.region_name}-${m.shard}"
      initial_cluster = join(",", [
        for peer in local.etcd_members : "${peer.name}=https://${peer.ip}:2380" if peer.shard == m.shard
      ])
      tls = {
        ca_pem   = var.tls.etcd_ca_pem
        cert_pem = var.tls.etcd_member_cert_pem
        key_pem  = var.tls.etcd_member_key_pem
      }
    })
  }

  agent_user_data = templatefile("${path.module}/templates/service.cloud-init.yaml.tftpl", {
    program   = "region-agent"
    unit      = "globallock-agent.service"
    unit_src  = file("${local.systemd_dir}/globallock-agent.service")
    sysusers  = file("${local.systemd_dir}/globallock.sysusers.conf")
    config    = local.agent_toml
    config_as = "agent.toml"
    image     = var.image
    # The agent's own certificate (<region>.agent.globallock), never the coordinators'.
    tls = {
      ca_pem   = var.tls.ca_pem
      cert_pem = var.tls.agent_cert_pem
      key_pem  = var.tls.agent_key_pem
    }
    # Its client certificate towards this region's etcd, and the etcd CA.
    etcd_tls = {
      ca_pem   = var.tls.etcd_ca_pem
      cert_pem = var.tls.agent_etcd_cert_pem
      key_pem  = var.tls.agent_etcd_key_pem
    }
  })

  coordinator_user_data = templatefile("${path.module}/templates/service.cloud-init.yaml.tftpl", {
    program   = "coordinator"
    unit      = "globallock-coordinator.service"
    unit_src  = file("${local.systemd_dir}/globallock-coordinator.service")
    sysusers  = file("${local.systemd_dir}/globallock.sysusers.conf")
    config    = local.coordinator_toml
    config_as = "coordinator.toml"
    image     = var.image
    # The coordinators' certificate (coordinator.globallock and the names clients dial).
    tls = {
      ca_pem   = var.tls.ca_pem
      cert_pem = var.tls.coordinator_cert_pem
      key_pem  = var.tls.coordinator_key_pem
    }
    # Coordinators never reach etcd.
    etcd_tls = null
  })
}
