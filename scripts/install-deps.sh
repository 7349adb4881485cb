#!/usr/bin/env bash
# Installs the system packages the project needs (Debian 12): etcd (etcd-server,
# etcd-client) for the local cluster and the tests, protoc (protobuf-compiler) for
# the build, promtool (prometheus) for the alert-rule and metrics checks. As root
# it uses apt-get; otherwise it says exactly what to run.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# promtool checks the deploy/ rules and the live /metrics output.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

# schemathesis (PyPI) drives the OpenAPI conformance test.
if ! python3 -c "import schemathesis" >/dev/null 2>&1; then
  echo "installing schemathesis (PyPI) for the OpenAPI conformance test..."
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis>=4.32,<5" \
    || { echo "could not install schemathesis: run  python3 -m pip install 'schemathesis>=4.32,<5'" >&2; exit 1; }
fi

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
