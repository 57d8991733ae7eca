package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// CertificateRegisteredEvent is what AWS IoT publishes on
// $aws/events/certificates/registered/<caCertificateId> when it auto-registers
// a device certificate (just-in-time registration), and again each time a
// device presents a PENDING_ACTIVATION certificate. The JITR rule
// (SELECT * FROM '$aws/events/certificates/registered/#') delivers it as is.
type CertificateRegisteredEvent struct {
	CertificateID     string     `json:"certificateId"`
	CACertificateID   string     `json:"caCertificateId"`
	Timestamp         int64      `json:"timestamp"`
	CertificateStatus CertStatus `json:"certificateStatus"`
	AWSAccountID      string     `json:"awsAccountId"`
	// RegistrationTimestamp is a string, a number or null on the wire; it is
	// kept as text ("" for null or absent).
	RegistrationTimestamp FlexString `json:"certificateRegistrationTimestamp"`
}

// FlexString decodes a JSON string, number or null into text.
type FlexString string

// UnmarshalJSON accepts a string, a number or null.
func (f *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*f = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = FlexString(s)
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want a string, a number or null: %w", err)
		}
		*f = FlexString(n.String())
		return nil
	}
}

// ParseCertificateRegisteredEvent decodes and checks a registered-certificate
// event. Unknown fields are ignored. The error wraps ErrInvalid.
func ParseCertificateRegisteredEvent(raw []byte) (CertificateRegisteredEvent, error) {
	var ev CertificateRegisteredEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return ev, fmt.Errorf("decode registered-certificate event: %w: %w", ErrInvalid, err)
	}
	if !isCertificateID(ev.CertificateID) {
		return ev, fmt.Errorf("registered-certificate event: certificateId %q is not 64 hex digits: %w", ev.CertificateID, ErrInvalid)
	}
	if !isCertificateID(ev.CACertificateID) {
		return ev, fmt.Errorf("registered-certificate event: caCertificateId %q is not 64 hex digits: %w", ev.CACertificateID, ErrInvalid)
	}
	return ev, nil
}

// isCertificateID reports whether s looks like an AWS IoT certificate id: 64
// lower-case hex digits.
func isCertificateID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// TelemetryEvent is the output of the data rule
// SELECT message, topic(2) AS device, timestamp() AS ts, newuuid() AS id FROM 'i/+/m'.
type TelemetryEvent struct {
	Message json.RawMessage // absent when the payload had no "message"
	Device  string
	TS      int64 // milliseconds since the epoch
	ID      string
}

// ParseTelemetryEvent decodes and checks a data-rule event. maxMessage bounds
// the size of the message in bytes. The error wraps ErrInvalid.
func ParseTelemetryEvent(raw []byte, maxMessage int) (TelemetryEvent, error) {
	var wire struct {
		Message json.RawMessage `json:"message"`
		Device  string          `json:"device"`
		TS      json.Number     `json:"ts"`
		ID      string          `json:"id"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&wire); err != nil {
		return TelemetryEvent{}, fmt.Errorf("decode telemetry event: %w: %w", ErrInvalid, err)
	}
	ev := TelemetryEvent{Message: wire.Message, Device: wire.Device, ID: wire.ID}
	if err := ValidateThingName(ev.Device); err != nil {
		return ev, fmt.Errorf("telemetry event: device: %w", err)
	}
	if len(ev.Message) == 0 || bytes.Equal(ev.Message, []byte("null")) {
		return ev, fmt.Errorf("telemetry event from %s: no message: %w", ev.Device, ErrInvalid)
	}
	if maxMessage > 0 && len(ev.Message) > maxMessage {
		return ev, fmt.Errorf("telemetry event from %s: message is %d bytes, limit %d: %w", ev.Device, len(ev.Message), maxMessage, ErrInvalid)
	}
	ts, err := strconv.ParseInt(wire.TS.String(), 10, 64)
	if err != nil || ts <= 0 {
		return ev, fmt.Errorf("telemetry event from %s: ts %q is not a positive integer of milliseconds: %w", ev.Device, wire.TS, ErrInvalid)
	}
	ev.TS = ts
	if !validMessageID(ev.ID) {
		return ev, fmt.Errorf("telemetry event from %s: id %q is not a rule newuuid(): %w", ev.Device, ev.ID, ErrInvalid)
	}
	return ev, nil
}

// validMessageID accepts the rule's newuuid(): 1 to 64 of [0-9a-zA-Z-].
func validMessageID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

// SortKey is the data table's sort key of a message: the timestamp zero-padded
// to 13 digits (sorts by time until the year 2286), '#', the message id, so that
// two messages in the same millisecond never overwrite each other.
func SortKey(ts int64, id string) string {
	return fmt.Sprintf("%013d#%s", ts, id)
}
