#!/usr/bin/env bash
# make-pki.sh DIR [THING...]: create a root CA, an intermediate CA that signs
# devices (the CA registered in AWS IoT) and one device certificate per thing
# name (subject CN = thing name, EKU clientAuth), with openssl, as the
# reference article does (ECDSA P-256 keys instead of RSA; AWS IoT accepts
# both). Existing CA files in DIR are reused, so running it again only adds
# devices.
#
#   scripts/make-pki.sh ./pki test_001 test_002
#
# Files: root.crt root.key intermediate.crt intermediate.key
#        chain.crt (intermediate + root)  <thing>.crt <thing>.key
# With SERVER=iot.example.com also server.crt/server.key for the custom
# domain (CN and DNS SAN, EKU serverAuth), to import into ACM.
# Validity in days: ROOT_DAYS (7300), CA_DAYS (3650), DEVICE_DAYS (365),
# SERVER_DAYS (375).
set -euo pipefail
dir=${1:?usage: make-pki.sh DIR [THING...]}
shift
mkdir -p "$dir"
cd "$dir"
root_days=${ROOT_DAYS:-7300}
ca_days=${CA_DAYS:-3650}
device_days=${DEVICE_DAYS:-365}
subj=${SUBJECT_PREFIX:-/O=mriot}

ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
cat >"$ext" <<'CNF'
[v3_ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_intermediate_ca]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server_cert]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[usr_cert]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

if [[ ! -f root.crt ]]; then
  key root.key
  openssl req -new -x509 -key root.key -sha256 -days "$root_days" -subj "$subj/CN=mriot Root CA" \
    -config /dev/null -extensions v3_ca -extfile "$ext" -out root.crt 2>/dev/null ||
    openssl req -new -x509 -key root.key -sha256 -days "$root_days" -subj "$subj/CN=mriot Root CA" \
      -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" -out root.crt
fi
if [[ ! -f intermediate.crt ]]; then
  key intermediate.key
  openssl req -new -key intermediate.key -sha256 -subj "$subj/CN=mriot Intermediate CA" -out intermediate.csr
  openssl x509 -req -in intermediate.csr -CA root.crt -CAkey root.key -CAcreateserial -sha256 \
    -days "$ca_days" -extfile "$ext" -extensions v3_intermediate_ca -out intermediate.crt
  rm -f intermediate.csr
fi
cat intermediate.crt root.crt >chain.crt

if [[ -n "${SERVER:-}" && ! -f server.crt ]]; then
  key server.key
  openssl req -new -key server.key -sha256 -subj "$subj/CN=$SERVER" -out server.csr
  sed -i '/^\[server_cert\]/r /dev/stdin' "$ext" <<<"subjectAltName = DNS:$SERVER"
  openssl x509 -req -in server.csr -CA intermediate.crt -CAkey intermediate.key -CAcreateserial -sha256 \
    -days "${SERVER_DAYS:-375}" -extfile "$ext" -extensions server_cert -out server.crt
  rm -f server.csr
fi

for thing in "$@"; do
  if [[ ! "$thing" =~ ^[a-zA-Z0-9:_-]{1,128}$ ]]; then
    echo "make-pki: $thing is not a valid thing name ([a-zA-Z0-9:_-], 1 to 128)" >&2
    exit 1
  fi
  key "$thing.key"
  openssl req -new -key "$thing.key" -sha256 -subj "$subj/CN=$thing" -out "$thing.csr"
  openssl x509 -req -in "$thing.csr" -CA intermediate.crt -CAkey intermediate.key -CAcreateserial -sha256 \
    -days "$device_days" -extfile "$ext" -extensions usr_cert -out "$thing.crt"
  rm -f "$thing.csr"
done
rm -f root.srl intermediate.srl
ls -1 "$PWD"
