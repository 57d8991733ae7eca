package ddbitem

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Commands table (global, PK ThingName, SK): three kinds of items share a
// device's partition, told apart by the sort key.
//
//   - the command: SK = the command id; written by the API (QUEUED), then
//     updated with conditions (SENT, ACKED, EXPIRED);
//   - a delivery record: SK = <id>#d#<sessionId>; the claim of the
//     command's delivery to one connection, put only where absent, only by
//     the region the connection is in;
//   - the ack record: SK = <id>#ack; put when the device acknowledges.
//
// The records are insert-only: a concurrent write of the command item in
// another region (global tables: last writer wins) can lose a status
// change, never a record, so "delivered once to this connection" and
// "ACKED" hold whatever the replication does. A reader merges the records
// into the command (MergeCommandRecords). In a query newest first, a
// command's records come just before it (their keys extend its id).
const (
	CommandsHashKey  = AttrThingName
	CommandsRangeKey = AttrSK

	AttrKind        = "Kind" // S: command, delivery or ack
	AttrCommandID   = "CommandId"
	AttrPayload     = "Payload"   // S: the JSON text
	AttrCreatedAt   = "CreatedAt" // N: epoch milliseconds
	AttrCmdExpires  = "ExpiresAt" // N: epoch milliseconds (not the TTL)
	AttrTTL         = "TTL"       // N: epoch seconds, the table's TTL attribute
	AttrSentAt      = "SentAt"    // N: epoch milliseconds
	AttrSentRegion  = "SentRegion"
	AttrSentSession = "SentSession"
	AttrDeliveries  = "Deliveries" // N
	AttrAckedAt     = "AckedAt"    // N: epoch milliseconds
	AttrResult      = "Result"
	AttrAt          = "At" // N: epoch milliseconds

	KindCommand  = "command"
	KindDelivery = "delivery"
	KindAck      = "ack"

	deliveryInfix = "#d#"
	ackSuffix     = "#ack"
)

// CommandRetention is how long the items of a command stay after it
// expires: the TTL attribute is ExpiresAt + CommandRetention.
const CommandRetention = 7 * 24 * time.Hour

// CommandKey is the key of a command item.
func CommandKey(thing, id string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrThingName: &types.AttributeValueMemberS{Value: thing},
		AttrSK:        &types.AttributeValueMemberS{Value: id},
	}
}

// DeliveryKey is the key of the delivery record of command id to session.
func DeliveryKey(thing, id, session string) map[string]types.AttributeValue {
	return CommandKey(thing, id+deliveryInfix+session)
}

// AckKey is the key of the ack record of command id.
func AckKey(thing, id string) map[string]types.AttributeValue { return CommandKey(thing, id+ackSuffix) }

func ms(t time.Time) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(t.UnixMilli(), 10)}
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

// MS is t as the table's epoch-milliseconds number.
func MS(t time.Time) types.AttributeValue { return ms(t) }

// TTLOf is the TTL attribute of a command expiring at expires.
func TTLOf(expires time.Time) types.AttributeValue {
	return num(expires.Add(CommandRetention).Unix())
}

// MarshalCommand returns the command item of c (its records are written
// apart).
func MarshalCommand(c fleet.Command) (map[string]types.AttributeValue, error) {
	if err := fleet.ValidateThingName(c.ThingName); err != nil {
		return nil, fmt.Errorf("marshal command: %w", err)
	}
	if err := fleet.ValidateCommandID(c.ID); err != nil {
		return nil, fmt.Errorf("marshal command of %s: %w", c.ThingName, err)
	}
	if !c.Status.Valid() {
		return nil, fmt.Errorf("marshal command %s/%s: status %q: %w", c.ThingName, c.ID, c.Status, fleet.ErrInvalid)
	}
	item := CommandKey(c.ThingName, c.ID)
	item[AttrKind] = str(KindCommand)
	item[AttrCommandID] = str(c.ID)
	item[AttrPayload] = str(string(c.Payload))
	item[AttrStatus] = str(string(c.Status))
	item[AttrCreatedAt] = ms(c.CreatedAt)
	item[AttrCmdExpires] = ms(c.ExpiresAt)
	item[AttrTTL] = TTLOf(c.ExpiresAt)
	item[AttrDeliveries] = num(int64(c.Deliveries))
	item[AttrVersion] = num(c.Version)
	if !c.SentAt.IsZero() {
		item[AttrSentAt] = ms(c.SentAt)
		item[AttrSentRegion] = str(c.SentRegion)
		item[AttrSentSession] = str(c.SentSession)
	}
	if !c.AckedAt.IsZero() {
		item[AttrAckedAt] = ms(c.AckedAt)
	}
	if c.Result != "" {
		item[AttrResult] = str(c.Result)
	}
	return item, nil
}

func sAttr(item map[string]types.AttributeValue, name string) string {
	if s, ok := item[name].(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

func nAttr(item map[string]types.AttributeValue, name string) (int64, bool, error) {
	av, ok := item[name]
	if !ok {
		return 0, false, nil
	}
	n, isN := av.(*types.AttributeValueMemberN)
	if !isN {
		return 0, false, fmt.Errorf("attribute %s is not a number: %w", name, fleet.ErrInvalid)
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("attribute %s %q: %w", name, n.Value, fleet.ErrInvalid)
	}
	return v, true, nil
}

func msTime(item map[string]types.AttributeValue, name string) (time.Time, error) {
	v, ok, err := nAttr(item, name)
	if err != nil || !ok {
		return time.Time{}, err
	}
	return time.UnixMilli(v).UTC(), nil
}

// UnmarshalCommand decodes a command item (not a record: ErrInvalid).
func UnmarshalCommand(item map[string]types.AttributeValue) (fleet.Command, error) {
	if k := sAttr(item, AttrKind); k != KindCommand {
		return fleet.Command{}, fmt.Errorf("unmarshal command item: kind %q: %w", k, fleet.ErrInvalid)
	}
	c := fleet.Command{
		ThingName: sAttr(item, AttrThingName), ID: sAttr(item, AttrSK),
		Payload: []byte(sAttr(item, AttrPayload)), Status: fleet.CommandStatus(sAttr(item, AttrStatus)),
		SentRegion: sAttr(item, AttrSentRegion), SentSession: sAttr(item, AttrSentSession), Result: sAttr(item, AttrResult),
	}
	if fleet.ValidateThingName(c.ThingName) != nil || fleet.ValidateCommandID(c.ID) != nil || !c.Status.Valid() {
		return fleet.Command{}, fmt.Errorf("unmarshal command item %q/%q status %q: %w", c.ThingName, c.ID, c.Status, fleet.ErrInvalid)
	}
	var err error
	for _, f := range []struct {
		name string
		to   *time.Time
	}{{AttrCreatedAt, &c.CreatedAt}, {AttrCmdExpires, &c.ExpiresAt}, {AttrSentAt, &c.SentAt}, {AttrAckedAt, &c.AckedAt}} {
		if *f.to, err = msTime(item, f.name); err != nil {
			return fleet.Command{}, fmt.Errorf("unmarshal command item %s/%s: %w", c.ThingName, c.ID, err)
		}
	}
	d, _, err := nAttr(item, AttrDeliveries)
	if err != nil {
		return fleet.Command{}, fmt.Errorf("unmarshal command item %s/%s: %w", c.ThingName, c.ID, err)
	}
	c.Deliveries = int(d)
	if c.Version, _, err = nAttr(item, AttrVersion); err != nil {
		return fleet.Command{}, fmt.Errorf("unmarshal command item %s/%s: %w", c.ThingName, c.ID, err)
	}
	return c, nil
}

// MarshalDelivery returns the delivery record of command id to session in
// region at t.
func MarshalDelivery(thing, id, session, region string, at, expires time.Time) map[string]types.AttributeValue {
	item := DeliveryKey(thing, id, session)
	item[AttrKind] = str(KindDelivery)
	item[AttrCommandID] = str(id)
	item[AttrSessionID] = str(session)
	item[AttrRegion] = str(region)
	item[AttrAt] = ms(at)
	item[AttrTTL] = TTLOf(expires)
	return item
}

// MarshalAck returns the ack record of command id.
func MarshalAck(thing, id string, at time.Time, result string, expires time.Time) map[string]types.AttributeValue {
	item := AckKey(thing, id)
	item[AttrKind] = str(KindAck)
	item[AttrCommandID] = str(id)
	item[AttrAt] = ms(at)
	if result != "" {
		item[AttrResult] = str(result)
	}
	item[AttrTTL] = TTLOf(expires)
	return item
}

// CommandOfKey returns the command id a sort key belongs to, and the item's
// kind by its key.
func CommandOfKey(sk string) (id, kind string) {
	if i := strings.IndexByte(sk, '#'); i >= 0 {
		if sk[i:] == ackSuffix {
			return sk[:i], KindAck
		}
		return sk[:i], KindDelivery
	}
	return sk, KindCommand
}

// MergeCommandRecords applies a command's records to it: an ack record
// makes it ACKED (whatever the item says: the item may have lost the
// change to a concurrent write elsewhere), a delivery record makes a QUEUED
// command SENT, and Deliveries is at least the number of delivery records.
func MergeCommandRecords(c fleet.Command, records []map[string]types.AttributeValue) fleet.Command {
	deliveries := 0
	var last map[string]types.AttributeValue
	var lastAt time.Time
	for _, rec := range records {
		switch sAttr(rec, AttrKind) {
		case KindDelivery:
			deliveries++
			at, _ := msTime(rec, AttrAt)
			if last == nil || at.After(lastAt) {
				last, lastAt = rec, at
			}
			c.Sends = append(c.Sends, fleet.CommandSend{Session: sAttr(rec, AttrSessionID), Region: sAttr(rec, AttrRegion), At: at})
		case KindAck:
			if c.Status != fleet.CommandAcked {
				c.Status = fleet.CommandAcked
				c.AckedAt, _ = msTime(rec, AttrAt)
				c.Result = sAttr(rec, AttrResult)
			}
		}
	}
	c.Deliveries = max(c.Deliveries, deliveries)
	if c.Status == fleet.CommandQueued && last != nil {
		// Delivered, and the SENT update did not land (or lost to another
		// region's write).
		c.Status = fleet.CommandSent
		c.SentAt, c.SentRegion, c.SentSession = lastAt, sAttr(last, AttrRegion), sAttr(last, AttrSessionID)
	}
	return c
}

// OpenCommands folds a device's items (MergePartition) and keeps the
// commands whose status is not final, oldest first.
func OpenCommands(items []map[string]types.AttributeValue) ([]fleet.Command, error) {
	cmds, err := MergePartition(items)
	if err != nil {
		return nil, err
	}
	cmds = slices.DeleteFunc(cmds, func(cmd fleet.Command) bool { return cmd.Status.Final() })
	slices.Reverse(cmds)
	return cmds, nil
}

// MergePartition folds a device's items, in any order, into its commands
// (records without their command are dropped), in the items' order of
// commands.
func MergePartition(items []map[string]types.AttributeValue) ([]fleet.Command, error) {
	records := map[string][]map[string]types.AttributeValue{}
	var cmds []fleet.Command
	for _, it := range items {
		id, kind := CommandOfKey(sAttr(it, AttrSK))
		if kind != KindCommand {
			records[id] = append(records[id], it)
			continue
		}
		c, err := UnmarshalCommand(it)
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, c)
	}
	for i := range cmds {
		cmds[i] = MergeCommandRecords(cmds[i], records[cmds[i].ID])
	}
	return cmds, nil
}

// CommandCursor is the opaque cursor of a page of commands that ends with
// command id.
func CommandCursor(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// ParseCommandCursor returns the command id a CommandCursor carries; "" for
// the first page. Anything else is ErrInvalid.
func ParseCommandCursor(cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || fleet.ValidateCommandID(string(b)) != nil {
		return "", fmt.Errorf("commands cursor %q: not one this API gave: %w", cursor, fleet.ErrInvalid)
	}
	return string(b), nil
}
