resource "aws_vpc" "main" {
  #checkov:skip=CKV2_AWS_11:VPC flow logs need a destination (CloudWatch log group or S3 bucket), a retention and an encryption key that are the account's policy, not this module's; enable them on the VPC (output-free) where the policy requires.
  cidr_block           = var.network_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })

  lifecycle {
    precondition {
      condition     = data.aws_region.current.name == var.location
      error_message = "location (${var.location}) is not the aws provider's region (${data.aws_region.current.name})."
    }
    precondition {
      condition     = length(data.aws_availability_zones.available.names) >= 3
      error_message = "The region has fewer than 3 available zones."
    }
  }
}

# The default security group admits nothing; every instance uses the groups below.
resource "aws_default_security_group" "main" {
  vpc_id = aws_vpc.main.id
  tags   = merge(local.tags, { Name = "${local.name}-default-closed" })
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "edge" {
  vpc_id                  = aws_vpc.main.id
  cidr_block              = local.edge_cidr
  availability_zone       = local.azs[0]
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${local.name}-edge" })
}

resource "aws_subnet" "nodes" {
  count                   = 3
  vpc_id                  = aws_vpc.main.id
  cidr_block              = local.node_cidrs[count.index]
  availability_zone       = local.azs[count.index]
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${local.name}-nodes-${count.index}" })
}

resource "aws_eip" "nat" {
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.name}-nat" })
}

# Coordinators and etcd members reach the internet (packages, the image, the
# other regions' agents) through this gateway: its address is the region's
# egress_ips output.
resource "aws_nat_gateway" "main" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.edge.id
  tags          = merge(local.tags, { Name = local.name })
  depends_on    = [aws_internet_gateway.main]
}

resource "aws_route_table" "edge" {
  vpc_id = aws_vpc.main.id
  tags   = merge(local.tags, { Name = "${local.name}-edge" })

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
}

resource "aws_route_table_association" "edge" {
  subnet_id      = aws_subnet.edge.id
  route_table_id = aws_route_table.edge.id
}

resource "aws_route_table" "nodes" {
  vpc_id = aws_vpc.main.id
  tags   = merge(local.tags, { Name = "${local.name}-nodes" })

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.main.id
  }
}

resource "aws_route_table_association" "nodes" {
  count          = 3
  subnet_id      = aws_subnet.nodes[count.index].id
  route_table_id = aws_route_table.nodes.id
}
