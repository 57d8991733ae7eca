package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Lifecycle event types (AWS IoT's eventType).
const (
	EventConnected    = "connected"
	EventDisconnected = "disconnected"
)

// LifecycleEvent is what AWS IoT publishes on
// $aws/events/presence/connected/<clientId> and
// $aws/events/presence/disconnected/<clientId> in the region of the
// connection; the presence rule (SELECT * FROM '$aws/events/presence/+/+')
// delivers it as is. AWS documents that these events may arrive out of order
// and more than once. VersionNumber increases with each connection of a
// client id within one region (the connected and disconnected events of one
// connection carry the same number); it is not comparable across regions.
// ClientInitiatedDisconnect and DisconnectReason are in disconnected events
// only.
type LifecycleEvent struct {
	ClientID                  string `json:"clientId"`
	Timestamp                 int64  `json:"timestamp"`
	EventType                 string `json:"eventType"`
	SessionIdentifier         string `json:"sessionIdentifier"`
	PrincipalIdentifier       string `json:"principalIdentifier"`
	IPAddress                 string `json:"ipAddress,omitempty"`
	VersionNumber             int64  `json:"versionNumber"`
	ClientInitiatedDisconnect *bool  `json:"clientInitiatedDisconnect,omitempty"`
	DisconnectReason          string `json:"disconnectReason,omitempty"`
}

// MaxLifecycleEventBytes bounds a lifecycle event's JSON text.
const MaxLifecycleEventBytes = 4096

// ParseLifecycleEvent decodes and checks a lifecycle event: a client id that
// is a thing name (the device policy makes a device connect with its thing
// name as client id), a positive timestamp in milliseconds, eventType
// connected or disconnected, a session identifier and a version number of 0
// or more. Unknown fields are ignored. The error wraps ErrInvalid; the event
// decoded so far is returned with it (for the log line).
func ParseLifecycleEvent(raw []byte) (LifecycleEvent, error) {
	var ev LifecycleEvent
	if len(raw) > MaxLifecycleEventBytes {
		return ev, fmt.Errorf("lifecycle event of %d bytes, more than %d: %w", len(raw), MaxLifecycleEventBytes, ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("decode lifecycle event: %w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return ev, fmt.Errorf("decode lifecycle event: text after the object: %w", ErrInvalid)
	}
	if err := ValidateThingName(ev.ClientID); err != nil {
		return ev, fmt.Errorf("lifecycle event: clientId: %w", err)
	}
	switch {
	case ev.EventType != EventConnected && ev.EventType != EventDisconnected:
		return ev, fmt.Errorf("lifecycle event of %s: eventType %q, want connected or disconnected: %w", ev.ClientID, ev.EventType, ErrInvalid)
	case ev.Timestamp <= 0:
		return ev, fmt.Errorf("lifecycle event of %s: timestamp %d: %w", ev.ClientID, ev.Timestamp, ErrInvalid)
	case ev.SessionIdentifier == "" || len(ev.SessionIdentifier) > 256:
		return ev, fmt.Errorf("lifecycle event of %s: sessionIdentifier of %d bytes: %w", ev.ClientID, len(ev.SessionIdentifier), ErrInvalid)
	case ev.VersionNumber < 0:
		return ev, fmt.Errorf("lifecycle event of %s: versionNumber %d: %w", ev.ClientID, ev.VersionNumber, ErrInvalid)
	}
	return ev, nil
}

// SessionRecord is one region's view of a device's latest connection there:
// the presence table's region record (key <thing>#<region>), written only by
// that region's presence function. Within a region, events are ordered by
// (Version, phase): a later connection (higher version number) supersedes,
// and within one connection the disconnect follows the connect. See
// ApplySession.
type SessionRecord struct {
	ThingName string
	Region    string
	SessionID string
	Connected bool
	// Started is the connect time of the session: the connected event's
	// timestamp, or the disconnected event's while its connect has not been
	// seen.
	Started time.Time
	// EventAt and Version are the latest applied event's timestamp and
	// version number.
	EventAt time.Time
	Version int64
	// Seq counts the changes applied to the record (the store increments it);
	// the presence item's Generation is the sum over the regions.
	Seq int64
}

// RecordOf is the session record an event would leave in region.
func RecordOf(ev LifecycleEvent, region string) SessionRecord {
	at := time.UnixMilli(ev.Timestamp).UTC()
	return SessionRecord{ThingName: ev.ClientID, Region: region, SessionID: ev.SessionIdentifier,
		Connected: ev.EventType == EventConnected, Started: at, EventAt: at, Version: ev.VersionNumber}
}

// phase orders the two events of one connection: connect, then disconnect.
func (r SessionRecord) phase() int {
	if r.Connected {
		return 0
	}
	return 1
}

// ApplySession is the ordering rule within one region: the record that
// results from applying the event record ev to the stored record (nil when
// none), and whether anything changed (Seq is left to the store). ev
// supersedes when its (Version, phase) is greater: a newer connection, or the
// disconnect of the stored connection; the disconnect keeps the session's
// Started. The connect of the stored, already disconnected connection (same
// Version, arriving late) only moves Started back to its timestamp, so the
// record does not depend on the order of arrival. Anything else (a
// duplicate, an older connection's event) changes nothing.
func ApplySession(stored *SessionRecord, ev SessionRecord) (SessionRecord, bool) {
	if stored == nil {
		return ev, true
	}
	s := *stored
	switch {
	case ev.Version > s.Version:
		ev.Seq = s.Seq
		return ev, true
	case ev.Version < s.Version:
		return s, false
	case ev.phase() > s.phase(): // the disconnect of the stored connection
		ev.Started, ev.Seq = s.Started, s.Seq
		return ev, true
	case ev.phase() < s.phase() && ev.Started.Before(s.Started): // its connect, late
		s.Started = ev.Started
		return s, true
	}
	return s, false
}

// PresenceRegionSeparator separates the thing name and the region in a
// session record's key. '#' is not allowed in thing names, so a region key
// never names a device: readers of the presence table's stream skip keys
// that are not thing names.
const PresenceRegionSeparator = "#"

// PresenceRegionKey is the presence table key of a thing's session record in
// region.
func PresenceRegionKey(thing, region string) string { return thing + PresenceRegionSeparator + region }

// SplitPresenceKey returns the thing name of a presence table key and the
// region ("" for a device's presence item).
func SplitPresenceKey(key string) (thing, region string) {
	thing, region, _ = strings.Cut(key, PresenceRegionSeparator)
	return thing, region
}

// Presence is a device's presence item (presence table, key ThingName): the
// fold of its regions' session records (FoldPresence), the same in every
// region once the records have replicated.
type Presence struct {
	ThingName string
	// Connected is true while the newest session (by start) is connected.
	Connected bool
	// Region, SessionID, EventAt and Version are those of the newest
	// session's latest applied event.
	Region    string
	SessionID string
	// Since is the connect time of the session while Connected (zero
	// otherwise).
	Since time.Time
	// LastSeen is the latest timestamp of any applied event, in any region.
	LastSeen time.Time
	EventAt  time.Time
	Version  int64
	// Generation is the sum of the session records' Seq the fold read: a
	// fold is stored only over one with a smaller generation.
	Generation int64
	UpdatedAt  time.Time
}

// newerSession orders sessions across regions: by start, then by the
// latest event's time, then by region name (only so that every replica
// picks the same).
func newerSession(a, b SessionRecord) bool {
	if !a.Started.Equal(b.Started) {
		return a.Started.After(b.Started)
	}
	if !a.EventAt.Equal(b.EventAt) {
		return a.EventAt.After(b.EventAt)
	}
	return a.Region > b.Region
}

// FoldPresence is the presence of thing from its session records in every
// region: the newest session by start (newerSession) says whether it is
// connected, and where; a session that started before it, in any region, is
// over whether or not its region ever publishes its disconnect. No records:
// the zero Presence with ThingName set.
func FoldPresence(thing string, recs []SessionRecord, now time.Time) Presence {
	p := Presence{ThingName: thing, UpdatedAt: now.UTC()}
	var cur *SessionRecord
	for i := range recs {
		r := &recs[i]
		p.Generation += r.Seq
		if r.EventAt.After(p.LastSeen) {
			p.LastSeen = r.EventAt
		}
		if cur == nil || newerSession(*r, *cur) {
			cur = r
		}
	}
	if cur == nil {
		return p
	}
	p.Connected, p.Region, p.SessionID, p.EventAt, p.Version = cur.Connected, cur.Region, cur.SessionID, cur.EventAt, cur.Version
	if cur.Connected {
		p.Since = cur.Started
	}
	return p
}

// SamePresence reports whether two presence items say the same, UpdatedAt
// aside.
func SamePresence(a, b Presence) bool {
	return a.ThingName == b.ThingName && a.Connected == b.Connected && a.Region == b.Region && a.SessionID == b.SessionID &&
		a.Since.Equal(b.Since) && a.LastSeen.Equal(b.LastSeen) && a.EventAt.Equal(b.EventAt) && a.Version == b.Version &&
		a.Generation == b.Generation
}
