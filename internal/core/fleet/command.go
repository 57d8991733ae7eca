package fleet

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// CommandStatus is where a command is in its life: QUEUED → SENT → ACKED,
// or EXPIRED. ACKED and EXPIRED are absorbing.
type CommandStatus string

// Command statuses.
const (
	CommandQueued  CommandStatus = "QUEUED"
	CommandSent    CommandStatus = "SENT"
	CommandAcked   CommandStatus = "ACKED"
	CommandExpired CommandStatus = "EXPIRED"
)

// Final reports whether s is absorbing (ACKED or EXPIRED).
func (s CommandStatus) Final() bool { return s == CommandAcked || s == CommandExpired }

// Valid reports whether s is a known command status.
func (s CommandStatus) Valid() bool {
	switch s {
	case CommandQueued, CommandSent, CommandAcked, CommandExpired:
		return true
	}
	return false
}

// Limits of commands.
const (
	// MaxCommandPayload bounds a command's payload (its JSON text): IoT's
	// Publish takes 128 KB, and the DynamoDB item (400 KB) holds the
	// payload with room to spare; 64 KB leaves room for the topic and
	// MQTT's headers, and keeps a device's partition small.
	MaxCommandPayload = 64 << 10
	// MaxCommandIDLen bounds a command id (and an ack's commandId).
	MaxCommandIDLen = 64
	// MaxAckResult bounds the result an ack carries (longer is cut).
	MaxAckResult = 256
)

// Command is one command to a device: one item of the commands table (PK
// ThingName, SK ID), plus what its delivery and ack records say (see
// internal/aws/ddbitem).
type Command struct {
	ThingName string
	// ID is time-ordered (NewCommandID): the newest command has the
	// greatest id.
	ID string
	// Payload is the JSON value as the operator gave it.
	Payload   json.RawMessage
	Status    CommandStatus
	CreatedAt time.Time
	ExpiresAt time.Time
	// SentAt, SentRegion and SentSession are the latest delivery's.
	SentAt      time.Time
	SentRegion  string
	SentSession string
	// Deliveries counts the deliveries (at most one per connection).
	Deliveries int
	// Sends are the delivery records read with the command (when the port
	// reads them): to which session, in which region, claimed when.
	Sends   []CommandSend
	AckedAt time.Time
	// Result is the device's ack payload, cut to MaxAckResult bytes.
	Result  string
	Version int64
}

// CommandSend is one delivery record: the claim of the command's delivery
// to a session, made in Region at At, just before the publish.
type CommandSend struct {
	Session string
	Region  string
	At      time.Time
}

// ReachedSince reports whether a delivery of c was published in region at
// or after since to another session than session: the connection the
// device has had in that region since then received it already (IoT routes
// a publish to whatever connection is subscribed).
func (c Command) ReachedSince(region, session string, since time.Time) bool {
	if since.IsZero() {
		return false
	}
	for _, s := range c.Sends {
		if s.Region == region && s.Session != session && !s.At.Before(since) {
			return true
		}
	}
	return false
}

// Effective returns c's status at now: a command past ExpiresAt that is not
// ACKED is EXPIRED, whatever is stored.
func (c Command) Effective(now time.Time) CommandStatus {
	if c.Status == CommandAcked || c.Status == CommandExpired {
		return c.Status
	}
	if !now.Before(c.ExpiresAt) {
		return CommandExpired
	}
	return c.Status
}

// CommandTopic is where a command is published to its device.
func CommandTopic(thing, id string) string { return "e/" + thing + "/cmd/" + id }

// AckTopic is where a device acknowledges a command.
func AckTopic(thing, id string) string { return "i/" + thing + "/ack/" + id }

// NewCommandID returns a time-ordered id: 13 digits of epoch milliseconds, a
// dash and 16 random hex digits. Ids of one device sort by creation time
// (within a millisecond, randomly), and never carry '/', '+' or '#'.
func NewCommandID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%013d-%s", now.UnixMilli(), hex.EncodeToString(b[:]))
}

// ValidateCommandID checks an id: 1 to MaxCommandIDLen of [0-9a-zA-Z-_.].
// It becomes an MQTT topic level and a DynamoDB sort key.
func ValidateCommandID(id string) error {
	if len(id) == 0 || len(id) > MaxCommandIDLen {
		return fmt.Errorf("command id %q: must be 1 to %d characters: %w", id, MaxCommandIDLen, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("command id %q: character %q is not one of [0-9a-zA-Z-_.]: %w", id, c, ErrInvalid)
		}
	}
	return nil
}

// AckEvent is what the ack rule
// SELECT topic(2) AS thingName, topic(4) AS commandId, timestamp() AS ts,
// * AS result FROM 'i/+/ack/+' hands the commands function.
type AckEvent struct {
	ThingName string
	CommandID string
	// TS is the rule's timestamp(), epoch milliseconds.
	TS int64
	// Result is the ack payload's JSON text, cut to MaxAckResult bytes (""
	// without one).
	Result string
}

// ParseAckEvent decodes and checks an ack rule event. Anything malformed is
// ErrInvalid.
func ParseAckEvent(raw []byte) (AckEvent, error) {
	var wire struct {
		ThingName string          `json:"thingName"`
		CommandID string          `json:"commandId"`
		TS        json.RawMessage `json:"ts"`
		Result    json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(raw, &wire); err != nil {
		return AckEvent{}, fmt.Errorf("decode ack event: %w: %w", ErrInvalid, err)
	}
	ev := AckEvent{ThingName: wire.ThingName, CommandID: wire.CommandID}
	if err := ValidateThingName(ev.ThingName); err != nil {
		return ev, fmt.Errorf("ack event: thing name: %w", err)
	}
	if err := ValidateCommandID(ev.CommandID); err != nil {
		return ev, fmt.Errorf("ack event from %s: %w", ev.ThingName, err)
	}
	ts, err := strconv.ParseInt(string(wire.TS), 10, 64) // a JSON integer, not a string
	if err != nil || ts <= 0 {
		return ev, fmt.Errorf("ack event from %s: ts %q is not a positive integer of milliseconds: %w", ev.ThingName, wire.TS, ErrInvalid)
	}
	ev.TS = ts
	if r := bytes.TrimSpace(wire.Result); len(r) > 0 && !bytes.Equal(r, []byte("null")) {
		var compact bytes.Buffer
		if json.Compact(&compact, r) == nil {
			r = compact.Bytes()
		}
		ev.Result = CutResult(string(r))
	}
	return ev, nil
}

// CutResult cuts s to MaxAckResult bytes on a UTF-8 boundary.
func CutResult(s string) string {
	if len(s) <= MaxAckResult {
		return s
	}
	s = s[:MaxAckResult]
	for len(s) > 0 && !isRuneStart(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xC0 {
		s = s[:len(s)-1] // the start of a rune whose rest was cut
	}
	return strings.ToValidUTF8(s, "")
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
