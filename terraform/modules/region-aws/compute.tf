# Common to every instance: IMDSv2 only, one hop (containers cannot read the user
# data, which holds the TLS key), encrypted disks, detailed monitoring.
#
# cloud-init applies user data at the first boot only. So: coordinators (stateless)
# are replaced when their configuration or image changes; the agent and etcd
# members keep state on their disks and are never replaced by a plan (their AMI and
# user data changes are ignored): change them as docs/deploy.md ("Changing a
# running region") says.
locals {
  root_gb = { etcd = 30, agent = 20, coordinator = 20 }
}

resource "terraform_data" "coordinator_config" {
  input = sha256(module.node_config.coordinator_user_data)
}

resource "aws_instance" "etcd" {
  #checkov:skip=CKV2_AWS_41:The instances call no AWS API, so they get no IAM role (an empty one would only widen what a compromised instance can try).
  for_each = { for m in module.node_config.etcd_members : m.key => m }

  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.instance_sizes.etcd
  subnet_id              = aws_subnet.nodes[each.value.zone].id
  private_ip             = each.value.ip
  vpc_security_group_ids = [aws_security_group.etcd[each.value.shard].id]
  user_data              = module.node_config.etcd_user_data[each.key]
  monitoring             = true
  ebs_optimized          = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = local.root_gb.etcd
  }

  tags = merge(local.tags, { Name = "${local.name}-etcd-${each.key}", "globallock:role" = "etcd" })

  lifecycle {
    ignore_changes = [ami, user_data]
  }
}

resource "aws_instance" "agent" {
  #checkov:skip=CKV2_AWS_41:The agent calls no AWS API, so it gets no IAM role.
  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.instance_sizes.agent
  subnet_id              = aws_subnet.edge.id
  private_ip             = local.agent_private_ip
  vpc_security_group_ids = [aws_security_group.agent.id]
  user_data              = module.node_config.agent_user_data
  monitoring             = true
  ebs_optimized          = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = local.root_gb.agent
  }

  tags = merge(local.tags, { Name = "${local.name}-agent", "globallock:role" = "agent" })

  lifecycle {
    ignore_changes = [ami, user_data]
  }

  # Every etcd member first, so the agent finds its shards when it starts.
  depends_on = [aws_instance.etcd]
}

# The other regions' coordinators reach the agent at this address (agent.<region>.<zone>).
resource "aws_eip" "agent" {
  domain   = "vpc"
  instance = aws_instance.agent.id
  tags     = merge(local.tags, { Name = "${local.name}-agent" })
}

resource "aws_instance" "coordinator" {
  #checkov:skip=CKV2_AWS_41:Coordinators call no AWS API, so they get no IAM role.
  count = var.coordinator_count

  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.instance_sizes.coordinator
  subnet_id              = aws_subnet.nodes[module.node_config.coordinators[count.index].zone].id
  private_ip             = module.node_config.coordinators[count.index].ip
  vpc_security_group_ids = [aws_security_group.coordinator.id]
  user_data              = module.node_config.coordinator_user_data
  monitoring             = true
  ebs_optimized          = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = local.root_gb.coordinator
  }

  tags = merge(local.tags, { Name = "${local.name}-coordinator-${count.index}", "globallock:role" = "coordinator" })

  lifecycle {
    ignore_changes       = [ami]
    replace_triggered_by = [terraform_data.coordinator_config]
  }
}
