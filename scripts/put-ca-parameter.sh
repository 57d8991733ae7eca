#!/usr/bin/env bash
# put-ca-parameter.sh CA_PEM_FILE REGION... : store the intermediate CA's PEM
# in the SSM String parameter the stack reads (CACertificatePem parameter,
# default /mriot/ca-certificate-pem) in every region of the deployment.
#
#   scripts/put-ca-parameter.sh pki/intermediate.crt eu-west-1 us-west-2
set -euo pipefail
pem=${1:?usage: put-ca-parameter.sh CA_PEM_FILE REGION...}
shift
[[ $# -gt 0 ]] || { echo "put-ca-parameter: name at least one region" >&2; exit 2; }
name=${CA_PARAMETER_NAME:-/mriot/ca-certificate-pem}
openssl x509 -in "$pem" -noout -subject >/dev/null || { echo "put-ca-parameter: $pem is not a PEM certificate" >&2; exit 1; }
for region in "$@"; do
  aws ssm put-parameter --region "$region" --name "$name" --type String --overwrite \
    --value "file://$pem" --description "mriot intermediate CA (JITR)" >/dev/null
  echo "$region: $name updated"
done
