package fleet

import (
	"fmt"
	"time"
)

// CertStatus is an AWS IoT certificate status.
type CertStatus string

// The certificate statuses AWS IoT knows.
const (
	CertActive            CertStatus = "ACTIVE"
	CertInactive          CertStatus = "INACTIVE"
	CertRevoked           CertStatus = "REVOKED"
	CertPendingActivation CertStatus = "PENDING_ACTIVATION"
	CertPendingTransfer   CertStatus = "PENDING_TRANSFER"
	CertRegisterInactive  CertStatus = "REGISTER_INACTIVE"
)

// Status is a device's status in the inventory: what every region converges to.
type Status string

// Device statuses.
const (
	// StatusActive: certificate ACTIVE, thing and attachments present everywhere.
	StatusActive Status = "ACTIVE"
	// StatusRevoked: certificate REVOKED everywhere; thing kept for audit.
	StatusRevoked Status = "REVOKED"
	// StatusDecommissioned: a tombstone. Registry resources are removed in every
	// region, and the record stays so that a returning certificate is refused
	// rather than onboarded again.
	StatusDecommissioned Status = "DECOMMISSIONED"
)

// Valid reports whether s is a known device status.
func (s Status) Valid() bool {
	switch s {
	case StatusActive, StatusRevoked, StatusDecommissioned:
		return true
	}
	return false
}

// Device is one item of the device inventory (a DynamoDB global table keyed by
// ThingName). It carries everything a region needs to converge its registry
// without asking the origin region: the certificate PEM travels with the item.
type Device struct {
	ThingName       string    `dynamodbav:"ThingName" json:"thingName"`
	CertificateID   string    `dynamodbav:"CertificateId" json:"certificateId"`
	CertificatePEM  string    `dynamodbav:"CertificatePem" json:"-"`
	CACertificateID string    `dynamodbav:"CaCertificateId" json:"caCertificateId"`
	NotAfter        time.Time `dynamodbav:"NotAfter" json:"notAfter"`
	Status          Status    `dynamodbav:"Status" json:"status"`
	OriginRegion    string    `dynamodbav:"OriginRegion" json:"originRegion"`
	Version         int64     `dynamodbav:"Version" json:"version"`
	UpdatedAt       time.Time `dynamodbav:"UpdatedAt" json:"updatedAt"`
}

// Certificate is a certificate as one region's IoT registry describes it.
type Certificate struct {
	ID              string
	ARN             string
	PEM             string
	CACertificateID string
	Status          CertStatus
}

// Thing is a thing as one region's IoT registry describes it.
type Thing struct {
	Name       string
	ARN        string
	Attributes map[string]string
}

// CACertificate is a CA certificate registered in one region.
type CACertificate struct {
	ID               string
	ARN              string
	PEM              string
	Status           CertStatus // ACTIVE or INACTIVE
	AutoRegistration bool
}

// Message is one telemetry item of the data table.
type Message struct {
	Device    string    // partition key (PK)
	SortKey   string    // SK: zero-padded ts, '#', message id
	Timestamp int64     // milliseconds since the epoch, from the rule's timestamp()
	ID        string    // the rule's newuuid()
	Region    string    // the region that received the message
	Payload   []byte    // the message exactly as the device sent it (JSON text)
	ExpiresAt time.Time // TTL attribute
}

// ClaimState is what a claim on a certificate registration found (the JITR
// claims table shared by every Lambda instance of a region). The zero value
// is no state: it comes only with an error.
type ClaimState int

// Claim states.
const (
	// ClaimTaken: this run holds the claim.
	ClaimTaken ClaimState = iota + 1
	// ClaimHeld: another run holds an unexpired claim on the same registration.
	ClaimHeld
	// ClaimDone: the registration was onboarded within its window.
	ClaimDone
)

// String names the state.
func (s ClaimState) String() string {
	switch s {
	case ClaimTaken:
		return "taken"
	case ClaimHeld:
		return "held"
	case ClaimDone:
		return "done"
	}
	return fmt.Sprintf("ClaimState(%d)", int(s))
}
