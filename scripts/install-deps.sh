#!/usr/bin/env bash
# Installs the system packages the project needs (Debian 12): etcd (etcd-server,
# etcd-client) for the local cluster and the tests, protoc (protobuf-compiler) for
# the build. As root it uses apt-get; otherwise it says exactly what to run.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's etcd-server may start a system etcd on 2379; we never use it (every
  # cluster here picks free ports), so leave it to its service manager.
else
  echo "missing system packages: ${need[*]}" >&2
  echo "install them with:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
