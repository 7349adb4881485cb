# The input contract shared by region-aws, region-gcp and region-azure: the same
# variables, types and rules in all three (tests/t87_deploy_manifests.rs checks
# it). Only the descriptions of location and instance_sizes, and the defaults of
# instance_sizes, name the cloud.

variable "region_name" {
  type        = string
  description = "This region's name in the lock service (the agent's `region`, the coordinators' [[regions]] names, the DNS label <region>.<dns_zone>)."
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$", var.region_name))
    error_message = "region_name: 1 to 32 lower-case letters, digits or '-', not starting or ending with '-' (it is a DNS label and part of resource names)."
  }
}

variable "location" {
  type        = string
  description = "AWS region, e.g. us-east-1 (must be the aws provider's region)."
  validation {
    condition     = length(var.location) > 0
    error_message = "location: must not be empty."
  }
}

variable "all_regions" {
  type        = list(string)
  description = "Every region of the deployment, this one included, in the same order everywhere: the coordinators' [[regions]] list. An odd number, at least 3."
  validation {
    condition     = length(var.all_regions) >= 3 && length(var.all_regions) % 2 == 1 && length(distinct(var.all_regions)) == length(var.all_regions)
    error_message = "all_regions: an odd number (at least 3) of distinct region names."
  }
}

variable "shard_count" {
  type        = number
  description = "Number of shards, each its own etcd cluster; the same in every region."
  default     = 2
  validation {
    condition     = var.shard_count >= 1 && var.shard_count <= 16 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count: a whole number from 1 to 16."
  }
}

variable "etcd_members_per_shard" {
  type        = number
  description = "Members of each shard's etcd cluster (1, 3 or 5), spread over the location's zones."
  default     = 3
  validation {
    condition     = contains([1, 3, 5], var.etcd_members_per_shard)
    error_message = "etcd_members_per_shard: 1, 3 or 5."
  }
}

variable "coordinator_count" {
  type        = number
  description = "Coordinators in this region (stateless; clients may use any of them)."
  default     = 2
  validation {
    condition     = var.coordinator_count >= 1 && var.coordinator_count <= 9 && floor(var.coordinator_count) == var.coordinator_count
    error_message = "coordinator_count: a whole number from 1 to 9."
  }
}

variable "instance_sizes" {
  type = object({
    etcd        = string
    agent       = string
    coordinator = string
  })
  description = "EC2 instance types of the etcd members, the agent and the coordinators. docs/deploy.md (Sizing) says how to choose them."
  default     = { etcd = "m6i.large", agent = "c6i.large", coordinator = "c6i.large" }
  validation {
    condition     = length(var.instance_sizes.etcd) > 0 && length(var.instance_sizes.agent) > 0 && length(var.instance_sizes.coordinator) > 0
    error_message = "instance_sizes: etcd, agent and coordinator must all be set."
  }
}

variable "image" {
  type        = string
  description = "Container image built from the repository's Dockerfile (registry/repository:tag or @sha256:digest), pullable without credentials from the VMs; the coordinator and region-agent binaries are copied out of it."
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image: registry/repository with a tag other than latest, or with a digest (@sha256:...)."
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
  description = "PEM certificate material, installed as /etc/globallock/tls/ca.pem, tls.crt and tls.key (mode 0640, group globallock). ca_pem: the CA every region's services trust (one CA for the whole deployment), on the agent and the coordinators. agent_cert_pem and agent_key_pem: the agent's; the certificate must carry the DNS name <region_name>.agent.globallock, which every coordinator checks (the agent refuses to start without it). coordinator_cert_pem and coordinator_key_pem: this region's coordinators'; the certificate must carry the DNS name coordinator.globallock, which agents require of their callers, plus the names clients dial (coordinator-N.<region_name>.<dns_zone>, or *.<region_name>.<dns_zone>). Keep the two apart: an agent holding a coordinator certificate could vote as a coordinator in every region. etcd_ca_pem: this region's etcd CA, a CA of its own that issues only the two etcd certificates below (every etcd member runs with --client-cert-auth and --peer-client-cert-auth trusting it alone), installed on the members as /etc/etcd/tls/ca.pem and on the agent as /etc/globallock/etcd-tls/ca.pem. etcd_member_cert_pem and etcd_member_key_pem: every etcd member's, on its client (2379) and peer (2380) ports; the certificate must carry the DNS name <region_name>.etcd.globallock, which the agent checks, and the IP address of every member (those of the etcd_endpoints output, known at plan time), which peers check; server and client authentication. agent_etcd_cert_pem and agent_etcd_key_pem: the agent's client certificate towards etcd; client authentication. It travels in the instances' user data."
  validation {
    condition     = can(regex("-----BEGIN CERTIFICATE-----", var.tls.ca_pem)) && can(regex("-----BEGIN CERTIFICATE-----", var.tls.agent_cert_pem)) && can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls.agent_key_pem)) && can(regex("-----BEGIN CERTIFICATE-----", var.tls.coordinator_cert_pem)) && can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls.coordinator_key_pem)) && can(regex("-----BEGIN CERTIFICATE-----", var.tls.etcd_ca_pem)) && can(regex("-----BEGIN CERTIFICATE-----", var.tls.etcd_member_cert_pem)) && can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls.etcd_member_key_pem)) && can(regex("-----BEGIN CERTIFICATE-----", var.tls.agent_etcd_cert_pem)) && can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls.agent_etcd_key_pem)) && var.tls.etcd_ca_pem != var.tls.ca_pem
    error_message = "tls: ca_pem, agent_cert_pem, coordinator_cert_pem, etcd_ca_pem, etcd_member_cert_pem and agent_etcd_cert_pem must be PEM certificates, agent_key_pem, coordinator_key_pem, etcd_member_key_pem and agent_etcd_key_pem PEM private keys, and etcd_ca_pem another CA than ca_pem."
  }
}

variable "access" {
  type        = string
  description = "The coordinators' access control, as TOML: the [[access.principals]] and [[access.rules]] tables of coordinator.toml (see coordinator/coordinator.sample.toml and docs/security.md), appended to it as written. Callers are identified by their client certificate's URI or DNS names, or by a bearer token kept as its SHA-256; anything no rule allows is denied. There is no open mode here: the coordinators refuse to start without it."
  validation {
    condition     = can(regex("(?m)^\\[\\[access\\.principals\\]\\]", var.access)) && can(regex("(?m)^\\[\\[access\\.rules\\]\\]", var.access)) && !can(regex("(?m)^\\s*(open_access|insecure)\\s*=", var.access))
    error_message = "access: TOML with at least one [[access.principals]] and one [[access.rules]] table, and neither open_access nor insecure."
  }
}

variable "dns_zone" {
  type        = string
  description = "The deployment's DNS zone, e.g. locks.example.com. This module creates the subzone <region_name>.<dns_zone> with the agent's and coordinators' records; delegate it from the zone (modules/dns does)."
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone))
    error_message = "dns_zone: a lower-case DNS name without a trailing dot, e.g. locks.example.com."
  }
}

variable "network_cidr" {
  type        = string
  description = "Private address space of this region (/16 to /22). Its first /24 holds the agent; the next three, one per zone, the coordinators (from .20) and etcd members (from .100). Must not overlap the other regions'."
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.network_cidr, 0)) && tonumber(split("/", var.network_cidr)[1]) >= 16 && tonumber(split("/", var.network_cidr)[1]) <= 22
    error_message = "network_cidr: an IPv4 CIDR block from /16 to /22."
  }
}

variable "agent_client_cidrs" {
  type        = list(string)
  description = "Addresses allowed to reach the agent's gRPC port 7411 from outside this region: the other regions' egress_ips (as /32). This region's coordinators are admitted by their own rule."
  validation {
    condition     = alltrue([for c in var.agent_client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "agent_client_cidrs: IPv4 CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "client_cidrs" {
  type        = list(string)
  description = "Addresses allowed to reach the coordinators' gRPC 7400 and REST 7480 (the services that take locks); by default the region's own network."
  default     = []
  validation {
    condition     = alltrue([for c in var.client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "client_cidrs: IPv4 CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "prometheus_cidrs" {
  type        = list(string)
  description = "Addresses allowed to scrape metrics: coordinators 7490, agent 7491, etcd 2381. Empty: nobody."
  default     = []
  validation {
    condition     = alltrue([for c in var.prometheus_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "prometheus_cidrs: IPv4 CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name."
  default     = "globallock"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "name_prefix: 1 to 20 lower-case letters, digits or '-', starting with a letter."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags (labels on Google Cloud) added to every resource that takes them."
  default     = {}
}
