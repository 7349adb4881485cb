variable "aws_region" {
  type        = string
  description = "AWS region of region-a, e.g. us-east-1."
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region: an AWS region name, e.g. us-east-1."
  }
}

variable "gcp_project" {
  type        = string
  description = "Google Cloud project of region-b."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.gcp_project))
    error_message = "gcp_project: a Google Cloud project id."
  }
}

variable "gcp_region" {
  type        = string
  description = "Google Cloud region of region-b, e.g. europe-west1."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.gcp_region))
    error_message = "gcp_region: a Google Cloud region name, e.g. europe-west1."
  }
}

variable "azure_subscription_id" {
  type        = string
  description = "Azure subscription of region-c."
  validation {
    condition     = can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.azure_subscription_id))
    error_message = "azure_subscription_id: a subscription GUID."
  }
}

variable "azure_location" {
  type        = string
  description = "Azure location of region-c, e.g. westeurope (it must have availability zones)."
  validation {
    condition     = can(regex("^[a-z0-9]+$", var.azure_location))
    error_message = "azure_location: an Azure location name, e.g. westeurope."
  }
}

variable "dns_zone" {
  type        = string
  description = "The deployment's DNS zone, hosted in Route 53, e.g. locks.example.com."
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone))
    error_message = "dns_zone: a lower-case DNS name without a trailing dot."
  }
}

variable "route53_zone_id" {
  type        = string
  description = "Route 53 hosted zone id of dns_zone."
  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,31}$", var.route53_zone_id))
    error_message = "route53_zone_id: a Route 53 hosted zone id."
  }
}

variable "image" {
  type        = string
  description = "The globallock image (the repository's Dockerfile), pushed where all three clouds can pull it, e.g. ghcr.io/ORG/globallock:0.1.0."
  validation {
    condition     = length(var.image) > 0 && !endswith(var.image, ":latest")
    error_message = "image: a tag other than latest, or a digest."
  }
}

variable "tls_dir" {
  type        = string
  description = "Directory holding ca.pem (the CA all regions trust) and one subdirectory per region (region-a, region-b, region-c) with agent.crt and agent.key (DNS name <region>.agent.globallock), coordinator.crt and coordinator.key (DNS names coordinator.globallock and *.<region>.<dns_zone>), and that region's etcd material: etcd-ca.pem (a CA of the region's etcd alone), etcd-member.crt and etcd-member.key (DNS name <region>.etcd.globallock and the IP address of every etcd member of the region) and agent-etcd.crt and agent-etcd.key (the agent's etcd client certificate), both from etcd-ca.pem."
  validation {
    condition     = length(var.tls_dir) > 0
    error_message = "tls_dir: must not be empty."
  }
}

variable "access_file" {
  type        = string
  description = "TOML file with the coordinators' [[access.principals]] and [[access.rules]] (who may call, and what they may do), the same for every region; access.toml.example is a starting point."
  validation {
    condition     = length(var.access_file) > 0
    error_message = "access_file: must not be empty."
  }
}

variable "client_cidrs" {
  type        = map(list(string))
  description = "By region name: addresses allowed to call that region's coordinators (gRPC 7400, REST 7480). A region left out admits its own network only."
  default     = {}
}

variable "prometheus_cidrs" {
  type        = list(string)
  description = "Addresses of the Prometheus servers that scrape every region (metrics ports 7490, 7491, 2381)."
  default     = []
}

variable "shard_count" {
  type        = number
  description = "Shards (etcd clusters) per region."
  default     = 2
  validation {
    condition     = var.shard_count >= 1 && var.shard_count <= 16
    error_message = "shard_count: from 1 to 16."
  }
}
