#!/bin/sh
# Makes the compose cluster's certificates (POSIX sh and openssl only):
#
#   gen-certs.sh DIR [OWNER [ETCD_OWNER]]
#
# A new CA for the globallock services, one directory per identity, each
# holding ca.pem (the CA), tls.crt and tls.key (the identity's certificate and
# its key, mode 0600):
#
#   DIR/coordinator/     DNS coordinator.globallock (agents serve only callers
#                        that carry it), plus what clients dial: localhost,
#                        coordinator-1, coordinator-2, IP 127.0.0.1.
#                        Server and client authentication.
#   DIR/agent-region-X/  (X = a, b, c) DNS region-X.agent.globallock (what the
#                        coordinators check, by SNI, whatever host they dial),
#                        plus agent-X (the host they dial). Server authentication.
#   DIR/client/          URI spiffe://globallock.dev/user/compose: a caller, for
#                        trying the cluster from the host. Client authentication.
#   DIR/ca/              ca.pem alone (no certificate, no key): for what only
#                        checks the services' certificates, such as Prometheus
#                        scraping the coordinators' and agents' HTTPS /metrics.
#
# And, for each region X, a CA of that region's etcd alone (it issues nothing
# else, so etcd's --client-cert-auth admits that region's agent and members
# only), with two more directories laid out the same way:
#
#   DIR/etcd-region-X/   the certificate of region X's etcd members (etcd-X0,
#                        etcd-X1: client and peer ports): DNS
#                        region-X.etcd.globallock (what the agent checks), plus
#                        what is dialled: etcd-X0, etcd-X1 (the agent, peers),
#                        localhost and IP 127.0.0.1 (the healthcheck's
#                        etcdctl). Server and client authentication (a peer
#                        presents it both ways; so does the healthcheck).
#   DIR/etcd-client-region-X/  region X's agent towards its etcd: DNS
#                        region-X.agent.globallock. Client authentication.
#
# OWNER (uid:gid) owns the coordinator's and agents' files (etcd-client-region-X
# included): the services read their key as that user. ETCD_OWNER (default:
# OWNER) owns etcd-region-X, read by etcd's user. The CAs' keys are thrown away:
# nothing can issue another certificate from them. Keys are ECDSA P-256,
# certificates SHA-256, valid GLOBALLOCK_CERT_DAYS days (default 365).
# docs/security.md lists the names each role needs in any deployment.
#
# If every file is already there, each from its CA, and valid for another week,
# nothing is changed (so `docker compose up` again keeps the client identity
# copied out to the host working); otherwise everything is made anew. Files are
# written beside their final name and renamed over it: a service that reloads
# its certificates never reads half a file.
#
# deploy/compose/compose.yaml runs it in the one-shot "certs" service;
# tests/t87_deploy_manifests.rs runs it, loads every shipped configuration
# with the certificates it made, and runs etcd as compose does with them.
set -eu

usage() {
  echo "usage: $0 DIR [OWNER(uid:gid)]" >&2
  exit 64
}
[ $# -ge 1 ] && [ $# -le 3 ] || usage
out=$1
owner=${2-}
etcd_owner=${3-$owner}
days=${GLOBALLOCK_CERT_DAYS:-365}
regions="a b c"
identities="coordinator agent-region-a agent-region-b agent-region-c client"
etcd_identities=""
for r in $regions; do
  etcd_identities="$etcd_identities etcd-region-$r etcd-client-region-$r"
done
etcd_identities=${etcd_identities# }

# The identity whose ca.pem is IDENTITY's CA: region X's etcd CA for its etcd
# identities, the services' CA for the others.
ca_of() { # IDENTITY
  case $1 in
    etcd-client-region-*) echo "etcd-region-${1#etcd-client-region-}" ;;
    etcd-region-*) echo "$1" ;;
    *) echo coordinator ;;
  esac
}

# Every file this script writes is private until it is given out below.
umask 077

fresh() {
  for id in $identities $etcd_identities; do
    for f in ca.pem tls.crt tls.key; do
      [ -s "$out/$id/$f" ] || return 1
    done
    cmp -s "$out/$(ca_of "$id")/ca.pem" "$out/$id/ca.pem" || return 1
    openssl verify -CAfile "$out/$id/ca.pem" "$out/$id/tls.crt" >/dev/null 2>&1 || return 1
    openssl x509 -noout -checkend 604800 -in "$out/$id/tls.crt" >/dev/null 2>&1 || return 1
  done
  cmp -s "$out/coordinator/ca.pem" "$out/ca/ca.pem" || return 1
  # Each region's etcd has a CA of its own, never the services' one.
  for r in $regions; do
    if cmp -s "$out/coordinator/ca.pem" "$out/etcd-region-$r/ca.pem"; then
      return 1
    fi
  done
}

if fresh; then
  echo "gen-certs: the certificates in $out are present and valid; keeping them"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gen-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# A minimal openssl configuration per certificate: nothing comes from the
# system's openssl.cnf, so any openssl (1.1.1, 3.x) makes the same certificates.
config() { # FILE CN EXTENSIONS...
  file=$1
  cn=$2
  shift 2
  {
    printf '[req]\nprompt = no\ndistinguished_name = dn\n[dn]\nCN = %s\n[ext]\n' "$cn"
    for line in "$@"; do
      printf '%s\n' "$line"
    done
  } >"$file"
}

key() { # FILE
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

serial() {
  echo "0x$(openssl rand -hex 16)"
}

make_ca() { # NAME CN: $work/NAME.pem and its key $work/NAME.key
  config "$work/$1.cnf" "$2" \
    "basicConstraints = critical, CA:TRUE, pathlen:0" \
    "keyUsage = critical, keyCertSign, cRLSign" \
    "subjectKeyIdentifier = hash"
  key "$work/$1.key"
  openssl req -new -x509 -config "$work/$1.cnf" -extensions ext -key "$work/$1.key" \
    -sha256 -days "$days" -set_serial "$(serial)" -out "$work/$1.pem"
}

issue() { # CA IDENTITY CN EXTENDED_KEY_USAGE SUBJECT_ALT_NAMES
  ca=$1
  shift
  mkdir "$work/$1"
  config "$work/$1/req.cnf" "$2" \
    "basicConstraints = critical, CA:FALSE" \
    "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = $3" \
    "subjectAltName = $4" \
    "subjectKeyIdentifier = hash" \
    "authorityKeyIdentifier = keyid"
  key "$work/$1/tls.key"
  openssl req -new -config "$work/$1/req.cnf" -key "$work/$1/tls.key" -out "$work/$1/tls.csr"
  openssl x509 -req -in "$work/$1/tls.csr" -CA "$work/$ca.pem" -CAkey "$work/$ca.key" \
    -set_serial "$(serial)" -sha256 -days "$days" \
    -extfile "$work/$1/req.cnf" -extensions ext -out "$work/$1/tls.crt" 2>/dev/null
  cp "$work/$ca.pem" "$work/$1/ca.pem"
}

make_ca ca "globallock compose CA"
issue ca coordinator "globallock coordinator" "serverAuth, clientAuth" \
  "DNS:coordinator.globallock, DNS:localhost, DNS:coordinator-1, DNS:coordinator-2, IP:127.0.0.1"
for r in $regions; do
  issue ca "agent-region-$r" "globallock agent region-$r" "serverAuth" \
    "DNS:region-$r.agent.globallock, DNS:agent-$r"
done
issue ca client "globallock compose client" "clientAuth" \
  "URI:spiffe://globallock.dev/user/compose"

# Each region's etcd: a CA of its own, its members' certificate and its agent's.
for r in $regions; do
  make_ca "etcd-ca-$r" "globallock compose etcd CA region-$r"
  issue "etcd-ca-$r" "etcd-region-$r" "globallock etcd region-$r" "serverAuth, clientAuth" \
    "DNS:region-$r.etcd.globallock, DNS:etcd-${r}0, DNS:etcd-${r}1, DNS:localhost, IP:127.0.0.1"
  issue "etcd-ca-$r" "etcd-client-region-$r" "globallock agent region-$r etcd client" "clientAuth" \
    "DNS:region-$r.agent.globallock"
done

# Into place: certificates world-readable, keys 0600, the services' files owned
# by OWNER. Each file is written beside its final name, then renamed over it.
for id in $identities $etcd_identities; do
  case $id in
    client) give= ;;
    etcd-region-*) give=$etcd_owner ;;
    *) give=$owner ;;
  esac
  # (In compose each directory is a volume's mount point, there already.)
  [ -d "$out/$id" ] || mkdir -p -m 0755 "$out/$id"
  for f in ca.pem tls.crt tls.key; do
    cp "$work/$id/$f" "$out/$id/.$f.partial"
    case $f in
      *.key) chmod 0600 "$out/$id/.$f.partial" ;;
      *) chmod 0644 "$out/$id/.$f.partial" ;;
    esac
    if [ -n "$give" ]; then
      chown "$give" "$out/$id/.$f.partial"
    fi
    mv -f "$out/$id/.$f.partial" "$out/$id/$f"
  done
done
# The services' CA alone, for Prometheus (world-readable; it holds no key).
[ -d "$out/ca" ] || mkdir -p -m 0755 "$out/ca"
cp "$work/ca.pem" "$out/ca/.ca.pem.partial"
chmod 0644 "$out/ca/.ca.pem.partial"
mv -f "$out/ca/.ca.pem.partial" "$out/ca/ca.pem"
echo "gen-certs: made a CA and the certificates of $identities, and per region an etcd CA and the certificates of $etcd_identities, in $out (valid $days days)"
