package ddbitem

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Presence table: a global table keyed by ThingName (hash key only), stream
// NEW_AND_OLD_IMAGES. Two kinds of items share it:
//
//   - a device's presence item, key <thing>: ThingName, Connected (BOOL),
//     Region, SessionId, Since (N ms, while connected), LastSeen (N ms),
//     EventAt (N ms), Version (N), Generation (N), UpdatedAt (S, RFC 3339)
//     and, while connected, OnlineShard (S: the sparse index's key);
//   - a region's session record, key <thing>#<region> (fleet.PresenceRegionKey):
//     Region, SessionId, Connected, Started, EventAt, Version, Phase (N: 0
//     connected, 1 disconnected) and Seq, written only by that region.
const (
	AttrConnected   = "Connected"
	AttrSessionID   = "SessionId"
	AttrSince       = "Since"
	AttrLastSeen    = "LastSeen"
	AttrEventAt     = "EventAt"
	AttrGeneration  = "Generation"
	AttrOnlineShard = "OnlineShard"
	AttrStarted     = "Started"
	AttrSeq         = "Seq"

	// PresenceHashKey is the presence table's partition key.
	PresenceHashKey = AttrThingName

	// PresenceConnectedIndex is the presence table's sparse global secondary
	// index: hash key OnlineShard, range key ThingName, projection ALL; only
	// connected devices' presence items have OnlineShard.
	PresenceConnectedIndex = "ConnectedIndex"

	// PresenceShards is the number of OnlineShard values: the connected
	// devices spread over this many index partitions.
	PresenceShards = 4
)

// OnlineShard is the index shard of a thing ("0" to PresenceShards-1).
func OnlineShard(thing string) string {
	h := fnv.New32a()
	h.Write([]byte(thing))
	return strconv.Itoa(int(h.Sum32() % PresenceShards))
}

// PresenceKey is the presence table key of a device's presence item.
func PresenceKey(thing string) map[string]types.AttributeValue { return DeviceKey(thing) }

// SessionKey is the presence table key of a thing's session record in region.
func SessionKey(thing, region string) map[string]types.AttributeValue {
	return DeviceKey(fleet.PresenceRegionKey(thing, region))
}

type presenceItem struct {
	ThingName   string `dynamodbav:"ThingName"`
	Connected   bool   `dynamodbav:"Connected"`
	Region      string `dynamodbav:"Region"`
	SessionID   string `dynamodbav:"SessionId"`
	Since       int64  `dynamodbav:"Since,omitempty"`
	LastSeen    int64  `dynamodbav:"LastSeen"`
	EventAt     int64  `dynamodbav:"EventAt"`
	Version     int64  `dynamodbav:"Version"`
	Generation  int64  `dynamodbav:"Generation"`
	UpdatedAt   string `dynamodbav:"UpdatedAt"`
	OnlineShard string `dynamodbav:"OnlineShard,omitempty"`
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// MarshalPresence returns a device's presence item.
func MarshalPresence(p fleet.Presence) (map[string]types.AttributeValue, error) {
	if err := fleet.ValidateThingName(p.ThingName); err != nil {
		return nil, fmt.Errorf("marshal presence: %w", err)
	}
	it := presenceItem{ThingName: p.ThingName, Connected: p.Connected, Region: p.Region, SessionID: p.SessionID,
		LastSeen: millis(p.LastSeen), EventAt: millis(p.EventAt), Version: p.Version, Generation: p.Generation,
		UpdatedAt: p.UpdatedAt.UTC().Format(time.RFC3339Nano)}
	if p.Connected {
		it.Since = millis(p.Since)
		it.OnlineShard = OnlineShard(p.ThingName)
	}
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return nil, fmt.Errorf("marshal presence of %s: %w", p.ThingName, err)
	}
	return item, nil
}

// UnmarshalPresence decodes a device's presence item. A malformed item
// (or a session record) wraps fleet.ErrInvalid.
func UnmarshalPresence(item map[string]types.AttributeValue) (fleet.Presence, error) {
	var it presenceItem
	if err := attributevalue.UnmarshalMap(item, &it); err != nil {
		return fleet.Presence{}, fmt.Errorf("unmarshal presence item: %w: %w", fleet.ErrInvalid, err)
	}
	if err := fleet.ValidateThingName(it.ThingName); err != nil {
		return fleet.Presence{}, fmt.Errorf("unmarshal presence item: key: %w", err)
	}
	p := fleet.Presence{ThingName: it.ThingName, Connected: it.Connected, Region: it.Region, SessionID: it.SessionID,
		Since: fromMillis(it.Since), LastSeen: fromMillis(it.LastSeen), EventAt: fromMillis(it.EventAt),
		Version: it.Version, Generation: it.Generation}
	if it.UpdatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, it.UpdatedAt)
		if err != nil {
			return fleet.Presence{}, fmt.Errorf("unmarshal presence item of %s: UpdatedAt: %w: %w", it.ThingName, fleet.ErrInvalid, err)
		}
		p.UpdatedAt = t
	}
	return p, nil
}

type sessionItem struct {
	ThingName string `dynamodbav:"ThingName"`
	Region    string `dynamodbav:"Region"`
	SessionID string `dynamodbav:"SessionId"`
	Connected bool   `dynamodbav:"Connected"`
	Started   int64  `dynamodbav:"Started"`
	EventAt   int64  `dynamodbav:"EventAt"`
	Version   int64  `dynamodbav:"Version"`
	Phase     int    `dynamodbav:"Phase"`
	Seq       int64  `dynamodbav:"Seq"`
}

// Phase is the AttrPhase of a session record: 0 connected, 1 disconnected.
func Phase(connected bool) int {
	if connected {
		return 0
	}
	return 1
}

// MarshalSession returns a session record's item.
func MarshalSession(r fleet.SessionRecord) (map[string]types.AttributeValue, error) {
	if err := fleet.ValidateThingName(r.ThingName); err != nil {
		return nil, fmt.Errorf("marshal session record: %w", err)
	}
	if r.Region == "" {
		return nil, fmt.Errorf("marshal session record of %s: no region: %w", r.ThingName, fleet.ErrInvalid)
	}
	item, err := attributevalue.MarshalMap(sessionItem{ThingName: fleet.PresenceRegionKey(r.ThingName, r.Region),
		Region: r.Region, SessionID: r.SessionID, Connected: r.Connected, Started: millis(r.Started),
		EventAt: millis(r.EventAt), Version: r.Version, Phase: Phase(r.Connected), Seq: r.Seq})
	if err != nil {
		return nil, fmt.Errorf("marshal session record of %s in %s: %w", r.ThingName, r.Region, err)
	}
	return item, nil
}

// UnmarshalSession decodes a session record. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalSession(item map[string]types.AttributeValue) (fleet.SessionRecord, error) {
	var it sessionItem
	if err := attributevalue.UnmarshalMap(item, &it); err != nil {
		return fleet.SessionRecord{}, fmt.Errorf("unmarshal session record: %w: %w", fleet.ErrInvalid, err)
	}
	thing, region := fleet.SplitPresenceKey(it.ThingName)
	if fleet.ValidateThingName(thing) != nil || region == "" || region != it.Region {
		return fleet.SessionRecord{}, fmt.Errorf("unmarshal session record: key %q: %w", it.ThingName, fleet.ErrInvalid)
	}
	return fleet.SessionRecord{ThingName: thing, Region: region, SessionID: it.SessionID, Connected: it.Connected,
		Started: fromMillis(it.Started), EventAt: fromMillis(it.EventAt), Version: it.Version, Seq: it.Seq}, nil
}

// PresenceCursor is the opaque cursor of a page of connected devices that
// ends with thing in shard.
func PresenceCursor(shard, thing string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(shard + "/" + thing))
}

// ParsePresenceCursor returns the shard and thing a PresenceCursor carries
// ("", "" for the first page). Anything else is ErrInvalid.
func ParsePresenceCursor(cursor string) (shard int, thing string, err error) {
	if cursor == "" {
		return 0, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	s, t, ok := strings.Cut(string(b), "/")
	n, nerr := strconv.Atoi(s)
	if err != nil || !ok || nerr != nil || n < 0 || n >= PresenceShards || fleet.ValidateThingName(t) != nil {
		return 0, "", fmt.Errorf("presence cursor %q: not one this API gave: %w", cursor, fleet.ErrInvalid)
	}
	return n, t, nil
}

// PresenceFromStreamImage decodes a presence table stream image (NewImage
// or OldImage of a record) that is a device's presence item; ok is false
// for a session record (key <thing>#<region>) and for an empty image,
// which readers of the stream skip. A malformed presence item wraps
// fleet.ErrInvalid.
func PresenceFromStreamImage(img map[string]events.DynamoDBAttributeValue) (p fleet.Presence, ok bool, err error) {
	key, has := img[AttrThingName]
	if !has || key.DataType() != events.DataTypeString {
		return fleet.Presence{}, false, nil
	}
	if _, region := fleet.SplitPresenceKey(key.String()); region != "" {
		return fleet.Presence{}, false, nil
	}
	item, err := FromStreamImage(img)
	if err != nil {
		return fleet.Presence{}, false, fmt.Errorf("presence stream image: %w", err)
	}
	p, err = UnmarshalPresence(item)
	if err != nil {
		return fleet.Presence{}, false, fmt.Errorf("presence stream image: %w", err)
	}
	return p, true, nil
}
