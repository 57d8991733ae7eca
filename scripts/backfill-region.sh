#!/usr/bin/env bash
# backfill-region.sh REGION [APPLICATION]: after adding REGION to a running
# deployment, converge its IoT registry to every device already in the
# inventory. DynamoDB copies existing items into a new replica without stream
# records, so the pipe never sees them; this puts one DeviceInventoryChange
# event per device on REGION's inventory bus, in the shape the pipe produces
# (detail = a stream record with the item's key), and the replicate function
# converges each device from the inventory item, as for any change.
# Idempotent: running it twice converges nothing twice.
#
#   scripts/backfill-region.sh ap-southeast-2
set -euo pipefail
region=${1:?usage: backfill-region.sh REGION [APPLICATION]}
app=${2:-mriot}
table="$app-device-inventory"
bus="$app-inventory"
account=$(aws sts get-caller-identity --query Account --output text)
stream=$(aws dynamodb describe-table --region "$region" --table-name "$table" --query Table.LatestStreamArn --output text)
count=0
batch=()
flush() {
  [[ ${#batch[@]} -gt 0 ]] || return 0
  entries=$(printf '%s\n' "${batch[@]}" | jq -s .)
  failed=$(aws events put-events --region "$region" --entries "$entries" --query FailedEntryCount --output text)
  if [[ "$failed" != "0" ]]; then
    echo "backfill: $failed of ${#batch[@]} events not accepted; run the script again" >&2
    exit 1
  fi
  batch=()
}
token=""
while :; do
  args=(--region "$region" --table-name "$table" --projection-expression ThingName --output json)
  [[ -n "$token" ]] && args+=(--starting-token "$token")
  page=$(aws dynamodb scan "${args[@]}" --max-items 100)
  while IFS= read -r thing; do
    [[ -n "$thing" ]] || continue
    detail=$(jq -cn --arg t "$thing" --arg r "$region" --arg s "$stream" --arg id "backfill-$thing-$(date +%s%N)" \
      '{eventID:$id, eventName:"MODIFY", eventVersion:"1.1", eventSource:"aws:dynamodb", awsRegion:$r,
        dynamodb:{Keys:{ThingName:{S:$t}}, StreamViewType:"NEW_IMAGE", SizeBytes:0, SequenceNumber:"0"},
        eventSourceARN:$s}')
    batch+=("$(jq -cn --arg bus "$bus" --arg d "$detail" \
      '{EventBusName:$bus, Source:"mriot.inventory", DetailType:"DeviceInventoryChange", Detail:$d}')")
    count=$((count + 1))
    [[ ${#batch[@]} -lt 10 ]] || flush
  done < <(jq -r '.Items[].ThingName.S' <<<"$page")
  token=$(jq -r '.NextToken // empty' <<<"$page")
  [[ -n "$token" ]] || break
done
flush
echo "backfill: $count devices sent to $bus in $region (account $account); watch the replicate function and its DLQs"
