terraform {
  # No provider: this module only renders configuration (templatefile, cidrhost).
  required_version = ">= 1.5.0, < 2.0.0"
}
