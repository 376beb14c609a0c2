#!/usr/bin/env bash
# Development TLS material for the broker: a CA, a server certificate and
# optional client certificates. See certs/README.md.
#
#   certs/make-certs.sh [OUTDIR]          create or renew (default: var/certs)
#   certs/make-certs.sh --check [OUTDIR]  report expiry, exit 1 if anything
#                                         expires within 30 days or is missing
#
# Environment: CERT_HOSTNAME="broker.example,10.0.0.5" extra server names,
#              CERT_CLIENTS="dev-1 dev-2" client certificates to make,
#              CERT_KEY_GROUP=mosquitto   group that may read server.key (the broker's
#                                         group: Mosquitto 2.0 started as root drops to
#                                         its user before it reads the TLS files).
set -euo pipefail
umask 077

RENEW_DAYS=30
CA_DAYS=3650
LEAF_DAYS=825

check_only=0
if [[ "${1:-}" == "--check" ]]; then
    check_only=1
    shift
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
outdir="${1:-$repo_root/var/certs}"

expiry() { openssl x509 -in "$1" -noout -enddate | cut -d= -f2; }

# True when the certificate exists and stays valid for RENEW_DAYS more days.
still_good() {
    [[ -f "$1" && -f "${1%.crt}.key" ]] &&
        openssl x509 -in "$1" -noout -checkend $((RENEW_DAYS * 86400)) >/dev/null
}

report() {
    if [[ ! -f "$1" ]]; then
        echo "$(basename "$1"): missing"
        return 1
    fi
    if still_good "$1"; then
        echo "$(basename "$1"): expires $(expiry "$1")"
    else
        echo "$(basename "$1"): EXPIRES $(expiry "$1") (within $RENEW_DAYS days or key missing)"
        return 1
    fi
}

if ((check_only)); then
    status=0
    report "$outdir/ca.crt" || status=1
    report "$outdir/server.crt" || status=1
    for name in ${CERT_CLIENTS:-}; do
        report "$outdir/client-$name.crt" || status=1
    done
    exit "$status"
fi

mkdir -p "$outdir"
chmod 0700 "$outdir"

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 0600 "$1"
}

# sign NAME SUBJECT EXTFILE: make NAME.key/NAME.crt signed by the CA.
sign() {
    local name="$1" subject="$2" ext="$3"
    new_key "$outdir/$name.key"
    openssl req -new -key "$outdir/$name.key" -subj "$subject" -out "$outdir/$name.csr"
    openssl x509 -req -in "$outdir/$name.csr" -CA "$outdir/ca.crt" -CAkey "$outdir/ca.key" \
        -CAcreateserial -days "$LEAF_DAYS" -sha256 -extfile "$ext" -out "$outdir/$name.crt" 2>/dev/null
    rm -f "$outdir/$name.csr"
    chmod 0644 "$outdir/$name.crt"
}

renewed_ca=0
if still_good "$outdir/ca.crt"; then
    echo "ca.crt: reusing"
else
    [[ -f "$outdir/ca.crt" ]] && echo "ca.crt: expires $(expiry "$outdir/ca.crt") (or key missing), renewing; every certificate it signed is renewed too"
    new_key "$outdir/ca.key"
    openssl req -new -x509 -key "$outdir/ca.key" -sha256 -days "$CA_DAYS" \
        -subj "/CN=Django MQTT Service development CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$outdir/ca.crt"
    chmod 0644 "$outdir/ca.crt"
    renewed_ca=1
fi

ext="$(mktemp)"
trap 'rm -f "$ext"' EXIT

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
IFS=',' read -r -a extra <<<"${CERT_HOSTNAME:-}"
for name in "${extra[@]}"; do
    name="${name//[[:space:]]/}"
    [[ -z "$name" ]] && continue
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
        sans+=",IP:$name"
    else
        sans+=",DNS:$name"
    fi
done

# The SAN list is part of what we want: a changed CERT_HOSTNAME renews too.
current_sans() {
    openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | tail -n +2 |
        sed -e 's/IP Address:/IP:/g' -e 's/ //g' -e 's/0:0:0:0:0:0:0:1/::1/'
}

if ((renewed_ca == 0)) && still_good "$outdir/server.crt" &&
    [[ "$(current_sans "$outdir/server.crt")" == "$sans" ]]; then
    echo "server.crt: reusing"
else
    if ((renewed_ca)); then
        echo "server.crt: new CA, signing a new one"
    elif ! still_good "$outdir/server.crt"; then
        [[ -f "$outdir/server.crt" ]] && echo "server.crt: expires $(expiry "$outdir/server.crt") (or key missing), renewing"
    else
        echo "server.crt: names changed to $sans, renewing"
    fi
    cat >"$ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans
EOF
    sign server "/CN=localhost" "$ext"
fi

for name in ${CERT_CLIENTS:-}; do
    if ((renewed_ca == 0)) && still_good "$outdir/client-$name.crt"; then
        echo "client-$name.crt: reusing"
        continue
    fi
    [[ -f "$outdir/client-$name.crt" ]] && echo "client-$name.crt: expiring or new CA, renewing"
    cat >"$ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOF
    sign "client-$name" "/CN=$name" "$ext"
done

# After the renewals, every run: the key may be older than this setting.
if [[ -n "${CERT_KEY_GROUP:-}" ]]; then
    chgrp "$CERT_KEY_GROUP" "$outdir" "$outdir/server.key"
    chmod 0750 "$outdir"
    chmod 0640 "$outdir/server.key"
    echo "server.key: readable by group $CERT_KEY_GROUP"
fi

echo "certificates in $outdir:"
report "$outdir/ca.crt"
report "$outdir/server.crt"
for name in ${CERT_CLIENTS:-}; do
    report "$outdir/client-$name.crt"
done
