variable "zone_id" {
  type        = string
  description = "Route 53 hosted zone id of dns_zone (the deployment's zone), which this module writes into."
  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,31}$", var.zone_id))
    error_message = "zone_id: a Route 53 hosted zone id, e.g. Z0123456789ABCDEFGHIJ."
  }
}

variable "dns_zone" {
  type        = string
  description = "Name of that zone, e.g. locks.example.com (the dns_zone given to every region module)."
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone))
    error_message = "dns_zone: a lower-case DNS name without a trailing dot, e.g. locks.example.com."
  }
}

variable "regions" {
  type = list(object({
    region_name       = string
    dns_subzone       = string
    dns_name_servers  = list(string)
    coordinator_hosts = list(string)
  }))
  description = "Every region, as its region module's outputs of the same names give it: the subzone to delegate, its name servers, and its coordinators' host names."
  validation {
    condition     = length(var.regions) >= 3 && length(var.regions) % 2 == 1 && length(distinct([for r in var.regions : r.region_name])) == length(var.regions)
    error_message = "regions: an odd number (at least 3) of regions with distinct names."
  }
  validation {
    condition     = alltrue([for r in var.regions : endswith(r.dns_subzone, ".${var.dns_zone}") && length(r.dns_name_servers) > 0 && length(r.coordinator_hosts) > 0])
    error_message = "regions: every dns_subzone must be inside dns_zone, with name servers and at least one coordinator host."
  }
}

variable "ttl" {
  type        = number
  description = "TTL (seconds) of the records written here. Short, so that a coordinator added or removed is seen soon."
  default     = 60
  validation {
    condition     = var.ttl >= 5 && var.ttl <= 86400
    error_message = "ttl: from 5 to 86400 seconds."
  }
}

variable "delegation_ttl" {
  type        = number
  description = "TTL (seconds) of the NS records that delegate each region's subzone."
  default     = 3600
  validation {
    condition     = var.delegation_ttl >= 60 && var.delegation_ttl <= 172800
    error_message = "delegation_ttl: from 60 to 172800 seconds."
  }
}
