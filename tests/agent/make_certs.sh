#!/usr/bin/env bash
# Writes a test PKI into $1: ca.{pem,key} with server.{pem,key} and
# client.{pem,key} signed by it (server: SAN IP:127.0.0.1, IP:10.77.0.1,
# IP:10.77.0.2, DNS:localhost), and other-ca.pem with rogue.{pem,key}
# signed by that other CA. Short-lived EC keys; nothing leaves $1.
set -euo pipefail
dir="$1"
mkdir -p "${dir}"
cd "${dir}"
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -days 2 -subj "/CN=$2" -out "$1.pem" 2>/dev/null
}
leaf() {  # name ca cn ext
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
ca ca "vhostmig test CA"
ca other-ca "another CA"
leaf server ca "vhostmig agent" \
  "subjectAltName=IP:127.0.0.1,IP:10.77.0.1,IP:10.77.0.2,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
leaf client ca "vhostmig operator" "extendedKeyUsage=clientAuth"
leaf rogue other-ca "intruder" "extendedKeyUsage=clientAuth"
