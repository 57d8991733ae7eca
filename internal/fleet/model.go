package fleet

import "time"

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
