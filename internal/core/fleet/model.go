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
	// NotBefore is the current certificate's NotBefore (zero on items
	// written before rotation existed: CurrentNotBefore derives it from
	// the PEM). A rotation accepts only a certificate issued later.
	NotBefore time.Time `dynamodbav:"NotBefore,omitempty" json:"notBefore,omitzero"`
	// Retiring are the device's previous certificates, each still valid in
	// every region until its RetireAt (the rotation's grace period), then
	// deactivated, detached and deleted everywhere.
	Retiring []RetiringCertificate `dynamodbav:"Retiring,omitempty" json:"retiring,omitempty"`
}

// DefaultRotationGrace is how long a rotated-out certificate stays valid
// unless configured otherwise (ROTATION_GRACE).
const DefaultRotationGrace = 7 * 24 * time.Hour

// RetiringCertificate is a device's previous certificate during the grace
// period of a rotation.
type RetiringCertificate struct {
	CertificateID   string    `dynamodbav:"CertificateId" json:"certificateId"`
	CertificatePEM  string    `dynamodbav:"CertificatePem" json:"-"`
	CACertificateID string    `dynamodbav:"CaCertificateId" json:"-"`
	RetireAt        time.Time `dynamodbav:"RetireAt" json:"retireAt"`
}

// CurrentNotBefore is the NotBefore of the item's current certificate: the
// item's own, or, for an item written before rotation existed, the PEM's.
func (d Device) CurrentNotBefore() (time.Time, error) {
	if !d.NotBefore.IsZero() {
		return d.NotBefore, nil
	}
	x, err := ParseCertificatePEM(d.CertificatePEM)
	if err != nil {
		return time.Time{}, fmt.Errorf("certificate of %s: %w", d.ThingName, err)
	}
	return x.NotBefore.UTC(), nil
}

// InGrace returns the retiring certificate id in its grace period at now.
func (d Device) InGrace(id string, now time.Time) (RetiringCertificate, bool) {
	for _, r := range d.Retiring {
		if r.CertificateID == id && now.Before(r.RetireAt) {
			return r, true
		}
	}
	return RetiringCertificate{}, false
}

// Graced returns the retiring certificates still in their grace period at now.
func (d Device) Graced(now time.Time) []RetiringCertificate {
	var out []RetiringCertificate
	for _, r := range d.Retiring {
		if now.Before(r.RetireAt) && r.CertificateID != d.CertificateID {
			out = append(out, r)
		}
	}
	return out
}

// Retired returns the ids of the retiring certificates past their grace at
// now (RetireAt reached).
func (d Device) Retired(now time.Time) []string {
	var out []string
	for _, r := range d.Retiring {
		if !now.Before(r.RetireAt) && r.CertificateID != d.CertificateID {
			out = append(out, r.CertificateID)
		}
	}
	return out
}

// CertificateIDs returns the current certificate's id and every retiring
// one's: every certificate the item names.
func (d Device) CertificateIDs() []string {
	ids := []string{d.CertificateID}
	for _, r := range d.Retiring {
		if r.CertificateID != "" && r.CertificateID != d.CertificateID {
			ids = append(ids, r.CertificateID)
		}
	}
	return ids
}

// EarliestRetireAt is the earliest RetireAt of the retiring certificates
// (zero when none).
func (d Device) EarliestRetireAt() time.Time {
	var t time.Time
	for _, r := range d.Retiring {
		if t.IsZero() || r.RetireAt.Before(t) {
			t = r.RetireAt
		}
	}
	return t
}

// Rotated returns the item with c (issued at notBefore) as its current
// certificate and the previous one retiring at retireAt, at the next
// version, written by region at now.
func (d Device) Rotated(c Certificate, retireAt time.Time, region string, now time.Time) (Device, error) {
	x, err := ParseCertificatePEM(c.PEM)
	if err != nil {
		return Device{}, fmt.Errorf("certificate %s: %w", c.ID, err)
	}
	out := d
	out.Retiring = nil
	for _, r := range d.Retiring {
		if r.CertificateID != c.ID {
			out.Retiring = append(out.Retiring, r)
		}
	}
	out.Retiring = append(out.Retiring, RetiringCertificate{CertificateID: d.CertificateID, CertificatePEM: d.CertificatePEM,
		CACertificateID: d.CACertificateID, RetireAt: retireAt.UTC()})
	out.CertificateID, out.CertificatePEM, out.CACertificateID = c.ID, c.PEM, c.CACertificateID
	out.NotBefore, out.NotAfter = x.NotBefore.UTC(), x.NotAfter.UTC()
	out.OriginRegion, out.Version, out.UpdatedAt = region, d.Version+1, now.UTC()
	return out, nil
}

// Certificate is a certificate as one region's IoT registry describes it.
type Certificate struct {
	ID              string
	ARN             string
	PEM             string
	CACertificateID string
	Status          CertStatus
	// CreatedAt is the certificate's creationDate: when this registration of
	// it was made (a certificate deleted and registered again gets a new
	// one). Zero when the answer carried none (AWS's RegisterCertificate
	// returns only the id and the ARN).
	CreatedAt time.Time
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

// Revocation is the absorbing record of a device's revocation or
// decommission. It lives in the inventory under its own key (the thing name
// and RevocationSuffix), beside the device's item, and is only ever written,
// never deleted: a REVOKED one may become DECOMMISSIONED, nothing else. A
// global table resolves concurrent writes of one item by last writer wins,
// so the device's item alone could lose a revocation to a write another
// region made at the same moment (an onboarding, a rollback's delete);
// nothing but a revocation ever writes this record, so no such write can
// undo it. A device with a revocation record is as restricted as the record
// says, whatever its item says.
type Revocation struct {
	ThingName       string
	Status          Status // StatusRevoked or StatusDecommissioned
	CertificateID   string // the certificate the device had when it was revoked
	CertificatePEM  string
	CACertificateID string
	UpdatedAt       time.Time
}

// RevocationSuffix ends the inventory key of a revocation record. '#' is
// not allowed in a thing name, so no device item can have such a key.
const RevocationSuffix = "#revocation"

// Restricts reports whether status a is at least as restrictive as b:
// ACTIVE < REVOKED < DECOMMISSIONED.
func Restricts(a, b Status) bool { return rank(a) >= rank(b) }

func rank(s Status) int {
	switch s {
	case StatusRevoked:
		return 1
	case StatusDecommissioned:
		return 2
	}
	return 0
}

// Effective is the device as its item and its revocation record together
// say: the item with the more restrictive status of the two (found=false
// when neither exists). Without an item, the record stands for it (version
// 0).
func Effective(d Device, found bool, r Revocation, revoked bool) (Device, bool) {
	switch {
	case !revoked:
		return d, found
	case !found:
		return Device{ThingName: r.ThingName, CertificateID: r.CertificateID, CertificatePEM: r.CertificatePEM,
			CACertificateID: r.CACertificateID, Status: r.Status, UpdatedAt: r.UpdatedAt}, true
	}
	if Restricts(r.Status, d.Status) {
		d.Status = r.Status
	}
	return d, true
}
