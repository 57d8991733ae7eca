// Package contract holds the port-level test suites that every implementation
// of a port must pass: the in-memory fakes (internal/memiot, internal/memddb)
// and the AWS adapters (internal/awsiot, internal/awsddb) against moto_server.
// The suites follow AWS's documented behaviour; where an emulator departs from
// it, the suite says so at the assertion that meets the departure.
//
// The interfaces here are the union of what the workflows use (each workflow
// declares its own smaller port) plus what the suites need to arrange state.
package contract

import (
	"context"
	"time"

	"github.com/mriot/mriot/internal/fleet"
)

// Registry is one region's AWS IoT registry, as the workflows see it. Errors
// wrap the fleet sentinels: ErrNotFound, ErrAlreadyExists, ErrDeleteConflict,
// ErrInvalid, ErrThrottled, ErrUnavailable.
type Registry interface {
	// DescribeCertificate returns the certificate with this id (ErrNotFound).
	DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error)
	// DescribeCACertificate returns the CA certificate with this id (ErrNotFound).
	DescribeCACertificate(ctx context.Context, id string) (fleet.CACertificate, error)
	// RegisterCertificate registers a device certificate signed by a CA
	// registered in this region, with the given status. A certificate that is
	// registered already fails with ErrAlreadyExists (AWS's
	// ResourceAlreadyExistsException) and is left as it is.
	RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (fleet.Certificate, error)
	// UpdateCertificate sets a certificate's status (ErrNotFound). Setting the
	// status it has already is a success.
	UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error
	// DeleteCertificate deletes a certificate (ErrNotFound). An ACTIVE
	// certificate, or one still attached to a thing or a policy, fails with
	// ErrDeleteConflict.
	DeleteCertificate(ctx context.Context, id string) error

	// DescribeThing returns the thing (ErrNotFound).
	DescribeThing(ctx context.Context, name string) (fleet.Thing, error)
	// CreateThing creates a thing. With the same name and attributes as an
	// existing thing it succeeds and changes nothing; with other attributes it
	// fails with ErrAlreadyExists (AWS's documented idempotency).
	CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error)
	// UpdateThingAttributes merges attrs into the thing's attributes (ErrNotFound).
	UpdateThingAttributes(ctx context.Context, name string, attrs map[string]string) error
	// DeleteThing deletes a thing. A thing that does not exist is a success
	// (AWS); a thing with principals attached fails with ErrDeleteConflict.
	DeleteThing(ctx context.Context, name string) error

	// AttachThingPrincipal attaches a certificate (by ARN) to a thing;
	// attaching twice is a success. Unknown thing or principal: ErrNotFound.
	AttachThingPrincipal(ctx context.Context, thing, principalARN string) error
	// DetachThingPrincipal detaches it; detaching what is not attached is a
	// success. Unknown thing: ErrNotFound.
	DetachThingPrincipal(ctx context.Context, thing, principalARN string) error
	// ListThingPrincipals lists the principal ARNs attached to a thing (ErrNotFound).
	ListThingPrincipals(ctx context.Context, thing string) ([]string, error)

	// AttachPolicy attaches a policy to a principal (by ARN); attaching twice
	// is a success. Unknown policy or principal: ErrNotFound.
	AttachPolicy(ctx context.Context, policy, principalARN string) error
	// DetachPolicy detaches it; detaching what is not attached is a success.
	DetachPolicy(ctx context.Context, policy, principalARN string) error
	// ListAttachedPolicies lists the policy names attached to a principal.
	ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error)
}

// Inventory is one region's replica of the device inventory. Errors wrap the
// fleet sentinels.
type Inventory interface {
	// Get returns the device (ErrNotFound).
	Get(ctx context.Context, thingName string) (fleet.Device, error)
	// Create writes d only if no item exists for d.ThingName, or the item holds
	// the same certificate and is ACTIVE (another region onboarding the same
	// device at the same time). Otherwise ErrConditionFailed.
	Create(ctx context.Context, d fleet.Device) error
	// Update replaces the item with d only if the stored Version equals
	// expectVersion (ErrConditionFailed; ErrNotFound when absent).
	Update(ctx context.Context, d fleet.Device, expectVersion int64) error
	// Delete removes the item; removing an absent item is a success.
	Delete(ctx context.Context, thingName string) error
	// DeleteVersion removes the item only if its stored Version equals
	// version; removing an absent item is a success. An item with another
	// version fails with ErrConditionFailed and is left as it is.
	DeleteVersion(ctx context.Context, thingName string, version int64) error
	// List returns up to limit devices after the cursor ("" for the start),
	// and the cursor of the next page ("" at the end).
	List(ctx context.Context, limit int, cursor string) ([]fleet.Device, string, error)
}

// Telemetry is one region's replica of the data table. Errors wrap the fleet
// sentinels.
type Telemetry interface {
	// Put stores m only if no item has its key (PK=Device, SK=SortKey);
	// otherwise ErrAlreadyExists and the stored item is left as it is.
	Put(ctx context.Context, m fleet.Message) error
	// Query returns up to limit messages of device, newest first.
	Query(ctx context.Context, device string, limit int) ([]fleet.Message, error)
}

// Claims is a region's JITR claims table, shared by every jitr instance of
// the region: one item per certificate (CertificateId), holding the
// registration (Registered), CLAIMED or DONE (State) and ExpiresAt (epoch
// seconds, the table's TTL attribute). Times compare in epoch seconds.
// Errors wrap the fleet sentinels.
type Claims interface {
	// Claim takes the claim on (certID, registered) until `until`, unless
	// another run holds an unexpired claim on the same registration
	// (fleet.ClaimHeld), or it is marked done and unexpired
	// (fleet.ClaimDone). A claim or done mark for another registration
	// (another registered value), or an expired one (ExpiresAt <= now), is
	// replaced (fleet.ClaimTaken).
	Claim(ctx context.Context, certID, registered string, now, until time.Time) (fleet.ClaimState, error)
	// Done marks the registration onboarded until `until` (unconditional put).
	Done(ctx context.Context, certID, registered string, until time.Time) error
	// Release deletes this run's claim so that the next event is handled at
	// once; only a CLAIMED item of the same registration is deleted
	// (conditional), anything else is left and nil is returned.
	Release(ctx context.Context, certID, registered string) error
}
