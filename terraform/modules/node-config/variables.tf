variable "region_name" {
  type        = string
  description = "This region's name, as every coordinator's [[regions]] list and the agent's `region` setting spell it."
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.region_name))
    error_message = "region_name: 1 to 63 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit (the services refuse anything else)."
  }
}

variable "all_regions" {
  type        = list(string)
  description = "Every region of the deployment (this one included): the coordinators' [[regions]] list. An odd number, at least 3."
  validation {
    condition     = length(var.all_regions) >= 3 && length(var.all_regions) % 2 == 1 && length(distinct(var.all_regions)) == length(var.all_regions)
    error_message = "all_regions: an odd number (at least 3) of distinct names."
  }
}

variable "dns_zone" {
  type        = string
  description = "DNS zone of the deployment, e.g. locks.example.com. Other regions' agents are reached as agent.<region>.<zone>."
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone))
    error_message = "dns_zone: a lower-case DNS name without a trailing dot, e.g. locks.example.com."
  }
}

variable "shard_count" {
  type        = number
  description = "Number of shards (one etcd cluster each), the same in every region."
  validation {
    condition     = var.shard_count >= 1 && var.shard_count <= 16 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count: a whole number from 1 to 16."
  }
}

variable "etcd_members_per_shard" {
  type        = number
  description = "Members of each shard's etcd cluster: 1, 3 or 5."
  validation {
    condition     = contains([1, 3, 5], var.etcd_members_per_shard)
    error_message = "etcd_members_per_shard: 1, 3 or 5."
  }
}

variable "coordinator_count" {
  type        = number
  description = "Coordinators in this region."
  validation {
    condition     = var.coordinator_count >= 1 && var.coordinator_count <= 9 && floor(var.coordinator_count) == var.coordinator_count
    error_message = "coordinator_count: a whole number from 1 to 9."
  }
}

variable "node_cidrs" {
  type        = list(string)
  description = "Subnets of the coordinators and etcd members, one per zone (1 to 3). Coordinator i and member m of every shard go to subnet (and zone) i or m modulo their number, at fixed hosts: coordinators from .20, etcd members from .100."
  validation {
    condition     = length(var.node_cidrs) >= 1 && length(var.node_cidrs) <= 3 && alltrue([for c in var.node_cidrs : can(cidrhost(c, 0)) && tonumber(split("/", c)[1]) <= 24])
    error_message = "node_cidrs: 1 to 3 IPv4 CIDR blocks of /24 or larger."
  }
}

variable "agent_private_ip" {
  type        = string
  description = "Private address of this region's agent: this region's coordinators reach it there (the other regions by its DNS name)."
  validation {
    condition     = can(cidrhost("${var.agent_private_ip}/32", 0))
    error_message = "agent_private_ip: an IPv4 address."
  }
}

variable "image" {
  type        = string
  description = "Container image holding /usr/local/bin/coordinator and /usr/local/bin/region-agent (the repository's Dockerfile), pulled with podman."
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image: registry/repository with a tag other than latest, or a digest (@sha256:...)."
  }
}

variable "tls" {
  type = object({
    ca_pem               = string
    agent_cert_pem       = string
    agent_key_pem        = string
    coordinator_cert_pem = string
    coordinator_key_pem  = string
    etcd_ca_pem          = string
    etcd_member_cert_pem = string
    etcd_member_key_pem  = string
    agent_etcd_cert_pem  = string
    agent_etcd_key_pem   = string
  })
  sensitive   = true
  description = "PEM certificate material, installed as /etc/globallock/tls/ca.pem, tls.crt and tls.key (mode 0640, group globallock): ca_pem on the agent and the coordinators; agent_cert_pem and agent_key_pem on the agent (the certificate must carry <region_name>.agent.globallock); coordinator_cert_pem and coordinator_key_pem on the coordinators (the certificate must carry coordinator.globallock and the names clients dial). For etcd, from this region's etcd CA etcd_ca_pem (one of the region's own, issuing nothing but these two): etcd_member_cert_pem and etcd_member_key_pem on every etcd member as /etc/etcd/tls/ca.pem, tls.crt and tls.key (group etcd; client and peer ports; the certificate must carry <region_name>.etcd.globallock and the IP address of every member, server and client authentication), and agent_etcd_cert_pem and agent_etcd_key_pem on the agent as /etc/globallock/etcd-tls/ca.pem, tls.crt and tls.key (its client certificate towards etcd, client authentication)."
}

variable "access" {
  type        = string
  description = "The coordinators' [[access.principals]] and [[access.rules]] tables, as TOML, appended to coordinator.toml as written."
  validation {
    condition     = can(regex("(?m)^\\[\\[access\\.principals\\]\\]", var.access)) && can(regex("(?m)^\\[\\[access\\.rules\\]\\]", var.access)) && !can(regex("(?m)^\\s*(open_access|insecure)\\s*=", var.access))
    error_message = "access: TOML with at least one [[access.principals]] and one [[access.rules]] table, and neither open_access nor insecure."
  }
}
