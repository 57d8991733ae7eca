package api

import (
	"encoding/json"
	"time"
)

// PENDING MERGE: the presence and commands branches define these; this
// file goes away when they land.

// Connected is where a device is connected now.
type Connected struct {
	Region    string    `json:"region"`
	Since     time.Time `json:"since"`
	SessionID string    `json:"sessionId,omitempty"`
}

// CommandStatus is a command's delivery status.
type CommandStatus string

// Command statuses.
const (
	CommandQueued  CommandStatus = "QUEUED"
	CommandSent    CommandStatus = "SENT"
	CommandAcked   CommandStatus = "ACKED"
	CommandExpired CommandStatus = "EXPIRED"
)

// Command is a command as the API shows it.
type Command struct {
	ID         string          `json:"id"`
	ThingName  string          `json:"thingName"`
	Payload    json.RawMessage `json:"payload"`
	Status     CommandStatus   `json:"status"`
	CreatedAt  time.Time       `json:"createdAt"`
	ExpiresAt  time.Time       `json:"expiresAt"`
	SentAt     *time.Time      `json:"sentAt,omitempty"`
	SentRegion string          `json:"sentRegion,omitempty"`
	Deliveries int             `json:"deliveries,omitempty"`
	AckedAt    *time.Time      `json:"ackedAt,omitempty"`
}

// CommandList is a page of commands.
type CommandList struct {
	Items []Command `json:"items"`
	Next  string    `json:"next,omitempty"`
}

// CommandRequest is the body of POST /devices/{thingName}/commands.
type CommandRequest struct {
	Payload    json.RawMessage `json:"payload"`
	TTLSeconds int             `json:"ttlSeconds,omitempty"`
}
