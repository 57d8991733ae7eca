#!/usr/bin/env bash
# redrive.sh REGION QUEUE FUNCTION [--dry-run]: send the events kept in a
# dead-letter queue back to their function (asynchronous invoke, so the
# function's retries and on-failure destination apply again), deleting each
# message once Lambda accepted it.
#
# QUEUE is a queue name of the stack: <app>-jitr-dlq, <app>-ingest-dlq,
# <app>-replicate-dlq (Lambda on-failure records: the event is their
# requestPayload) or <app>-replicate-rule-dlq (EventBridge: the message is the
# event). The pipe DLQ and the IoT rule error queue hold no replayable event:
# see docs/operations.md.
#
#   scripts/redrive.sh eu-west-1 mriot-jitr-dlq <jitr function name> --dry-run
set -euo pipefail
region=${1:?usage: redrive.sh REGION QUEUE FUNCTION [--dry-run]}
queue=${2:?usage: redrive.sh REGION QUEUE FUNCTION [--dry-run]}
fn=${3:?usage: redrive.sh REGION QUEUE FUNCTION [--dry-run]}
dry=${4:-}
case "$queue" in
  *-pipe-dlq|*-iot-rule-errors) echo "redrive: $queue holds no replayable event (docs/operations.md)" >&2; exit 2 ;;
esac
url=$(aws sqs get-queue-url --region "$region" --queue-name "$queue" --query QueueUrl --output text)
sent=0
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
while :; do
  msgs=$(aws sqs receive-message --region "$region" --queue-url "$url" --max-number-of-messages 10 \
    --wait-time-seconds 2 --visibility-timeout 120 --output json)
  n=$(jq '.Messages // [] | length' <<<"$msgs")
  [[ "$n" -gt 0 ]] || break
  for i in $(seq 0 $((n - 1))); do
    body=$(jq -r ".Messages[$i].Body" <<<"$msgs")
    handle=$(jq -r ".Messages[$i].ReceiptHandle" <<<"$msgs")
    # A Lambda on-failure record carries the event as requestPayload.
    payload=$(jq -c 'if type == "object" and has("requestPayload") then .requestPayload else . end' <<<"$body")
    if [[ "$dry" == "--dry-run" ]]; then
      echo "$payload"
      continue
    fi
    printf '%s' "$payload" >"$tmp"
    aws lambda invoke --region "$region" --function-name "$fn" --invocation-type Event \
      --cli-binary-format raw-in-base64-out --payload "fileb://$tmp" /dev/null >/dev/null
    aws sqs delete-message --region "$region" --queue-url "$url" --receipt-handle "$handle"
    sent=$((sent + 1))
  done
  [[ "$dry" != "--dry-run" ]] || break
done
echo "redrive: $sent events sent from $queue to $fn"
