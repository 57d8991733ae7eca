// Package contract declares the ports: one region's IoT registry, the
// inventory, telemetry, claims and lease tables, as the AWS adapters
// (internal/aws/awsiot, internal/aws/awsddb) and the in-memory fakes
// (internal/fake/memiot, internal/fake/memddb) implement them. The
// interfaces are the union of what the workflows use (each workflow declares
// its own smaller port) plus what the contract suites need to arrange state.
// The suites live in internal/testkit/contracttest, so that this package,
// which the adapters import, links no test code into a Lambda.
package contract

import (
	"context"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Registry is one region's AWS IoT registry, as the workflows see it. Errors
// wrap the fleet sentinels: ErrNotFound, ErrAlreadyExists, ErrDeleteConflict,
// ErrInvalid, ErrThrottled, ErrUnavailable.
type Registry interface {
	// DescribeCertificate returns the certificate with this id (ErrNotFound),
	// CreatedAt included.
	DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error)
	// DescribeCACertificate returns the CA certificate with this id (ErrNotFound).
	DescribeCACertificate(ctx context.Context, id string) (fleet.CACertificate, error)
	// RegisterCertificate registers a device certificate signed by a CA
	// registered in this region, with the given status. A certificate that is
	// registered already fails with ErrAlreadyExists (AWS's
	// ResourceAlreadyExistsException) and is left as it is. CreatedAt may be
	// zero: AWS answers with the id and the ARN only.
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

	// The listings serve the reconciler's walk through a region. The pages
	// follow AWS: up to limit items (1 to MaxListLimit, else ErrInvalid)
	// after cursor ("" for the first page), and the cursor of the next page
	// ("" at the end). A cursor is opaque and only valid for the same
	// arguments; a page may hold fewer than limit items before the end. The
	// order is the backend's.

	// ListThings lists the things, with their attributes (AWS ListThings).
	// With attrName and attrValue, only the things whose attribute attrName
	// is exactly attrValue; both "" list every thing, and one without the
	// other is ErrInvalid.
	ListThings(ctx context.Context, attrName, attrValue string, limit int, cursor string) ([]fleet.Thing, string, error)
	// ListCACertificates lists every CA certificate registered in the
	// region, all pages, with id, ARN and status only: AWS's list carries no
	// PEM and no auto-registration status (DescribeCACertificate has them).
	ListCACertificates(ctx context.Context) ([]fleet.CACertificate, error)
	// ListCertificatesByCA lists the device certificates registered with
	// the CA caID (AWS ListCertificatesByCA), with id, ARN, status,
	// CreatedAt and CACertificateID = caID; no PEM. A CA that is not
	// registered lists nothing (AWS documents no ResourceNotFoundException
	// for it); a malformed id is ErrInvalid.
	ListCertificatesByCA(ctx context.Context, caID string, limit int, cursor string) ([]fleet.Certificate, string, error)
}

// MaxListLimit is the largest page the Registry listings take: AWS IoT's
// maxResults and pageSize range from 1 to 250.
const MaxListLimit = 250

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
	// and the cursor of the next page ("" at the end). Revocation records
	// share the table and are skipped: a page may hold fewer than limit
	// devices (even none) before the end, its next cursor may stand for a
	// revocation record's key, and such a cursor is accepted.
	List(ctx context.Context, limit int, cursor string) ([]fleet.Device, string, error)
	// ByCertificate returns the thing name of the item whose CertificateId
	// is certID, through the global secondary index CertificateIndex
	// (ErrNotFound when none; the smallest thing name when several; an empty
	// certID is ErrInvalid). Index reads are eventually consistent: a caller
	// confirms with Get that the item still holds the certificate. A
	// revocation record is never found: it has no CertificateId.
	ByCertificate(ctx context.Context, certID string) (string, error)

	// Revocation returns the thing's revocation record (fleet.ErrNotFound
	// when none). See fleet.Revocation: the record lives beside the device
	// item under its own key and is never deleted.
	Revocation(ctx context.Context, thingName string) (fleet.Revocation, error)
	// Revoke records a revocation: put only where there is no record, or a
	// REVOKED record that becomes DECOMMISSIONED; a record at least as
	// restrictive is kept and that is a success (nil). r.Status must be
	// REVOKED or DECOMMISSIONED (fleet.ErrInvalid).
	Revoke(ctx context.Context, r fleet.Revocation) error
	// Revocations lists the revocation records: a Scan page of limit items
	// after cursor (the key of the last item of the previous page; "" for
	// the start), keeping the records; a page may be empty with a next
	// cursor; "" at the end. limit < 1: fleet.ErrInvalid.
	Revocations(ctx context.Context, limit int, cursor string) ([]fleet.Revocation, string, error)
	// RevokedOn returns the things whose revocation record was written or
	// upgraded on day (UTC, 2006-01-02; another form is fleet.ErrInvalid),
	// sorted, through the sparse global secondary index RevocationIndex.
	// Index reads are eventually consistent: a caller reads the record with
	// Revocation.
	RevokedOn(ctx context.Context, day string) ([]string, error)
	// RetiringOn returns the things whose device item's earliest retiring
	// certificate (fleet.Device.Retiring) ends its grace on day (UTC,
	// 2006-01-02; another form is fleet.ErrInvalid), sorted, through the
	// sparse global secondary index RetirementIndex. An item whose
	// retiring certificates are all dropped leaves the index. Eventually
	// consistent: a caller reads the item with Get.
	RetiringOn(ctx context.Context, day string) ([]string, error)
}

// Telemetry is one region's replica of the data table. Errors wrap the fleet
// sentinels.
type Telemetry interface {
	// Put stores m only if no item has its key (PK=Device, SK=SortKey);
	// otherwise ErrAlreadyExists and the stored item is left as it is.
	Put(ctx context.Context, m fleet.Message) error
	// Query returns up to limit messages of device, newest first.
	Query(ctx context.Context, device string, limit int) ([]fleet.Message, error)
	// Page returns up to limit messages of device older than cursor ("":
	// the newest), newest first, and the cursor of the next page: opaque,
	// and "" only when no older message is left. A cursor that is not one
	// Page gave is ErrInvalid.
	Page(ctx context.Context, device string, limit int, cursor string) ([]fleet.Message, string, error)
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

// Leases is a region's device lease table (a regional table, key ThingName):
// one item per device holding the lease (Owner, Fence, LeaseUntil in epoch
// milliseconds) and the region's ledger of the device (see fleet.Lease), plus
// the reconciler's cursor under fleet.ReconcileCursorKey. Times compare in
// epoch milliseconds. Errors wrap the fleet sentinels; an invalid thing name
// or an empty owner is ErrInvalid.
type Leases interface {
	// Acquire takes the lease on thing for owner until `until`: SET Owner,
	// LeaseUntil ADD Fence 1 under attribute_not_exists(Owner) OR
	// LeaseUntil <= :now, so a free or expired lease is taken (over) and the
	// fence grows at every acquisition. It returns the stored lease with the
	// ledger the last holder left. A lease held by another run (or by the
	// same owner: a lease is not reentrant) fails with *fleet.LeaseHeldError
	// naming the holder and its expiry (an ErrBusy).
	Acquire(ctx context.Context, thing, owner string, now, until time.Time) (fleet.Lease, error)
	// Renew sets LeaseUntil to until under Owner = :owner AND Fence = :fence
	// (the holder condition; a failed one is ErrLeaseLost and nothing
	// changes), and returns the stored lease. An expired lease that nobody
	// took over is renewed.
	Renew(ctx context.Context, l fleet.Lease, until time.Time) (fleet.Lease, error)
	// Note adds certIDs to the ledger's certificates (ADD Certificates, a
	// string set: no duplicates) under the holder condition (ErrLeaseLost),
	// before the holder registers them. No ids is a success without a call.
	Note(ctx context.Context, l fleet.Lease, certIDs ...string) error
	// Release frees the lease (REMOVE Owner, LeaseUntil; the fence stays) and
	// stores ledger in the same write (ddbitem.LedgerAttributes: empty
	// certificates or obligations remove their attribute) under the holder
	// condition (ErrLeaseLost).
	Release(ctx context.Context, l fleet.Lease, ledger fleet.Ledger) error
	// Get reads the device's lease item with a strongly consistent read
	// (ErrNotFound when there is none).
	Get(ctx context.Context, thing string) (fleet.Lease, error)
	// Pending reads one Scan page of up to limit items after cursor (the
	// thing name of the last item read by the previous page; "" for the
	// start) and returns the leases whose item has an Obligations attribute,
	// and the next cursor ("" at the end). The limit counts items read, so a
	// page may be empty with a next cursor. The cursor item is never
	// returned. A limit below 1 is ErrInvalid.
	Pending(ctx context.Context, limit int, cursor string) ([]fleet.Lease, string, error)
	// LoadCursor returns the reconciler's stored cursor (strongly consistent;
	// the zero value and nil when none was saved).
	LoadCursor(ctx context.Context) (fleet.ReconcileCursor, error)
	// SaveCursor stores c with Revision c.Revision+1 only if the stored
	// Revision is c.Revision (no cursor counts as 0), and returns the saved
	// cursor; otherwise ErrConditionFailed and nothing changes, so two
	// reconciler invocations never both advance from the same cursor.
	SaveCursor(ctx context.Context, c fleet.ReconcileCursor) (fleet.ReconcileCursor, error)
}

// Presence is one region's replica of the presence table (a global table
// keyed by ThingName): every region's session record of a device (key
// <thing>#<region>, written by that region only) and the device's presence
// item, their fold (fleet.FoldPresence). Errors wrap the fleet sentinels;
// an invalid thing name or an empty region is ErrInvalid.
type Presence interface {
	// Record applies ev (fleet.RecordOf a lifecycle event) to the thing's
	// session record in ev.Region by the rule fleet.ApplySession, atomically
	// (a conditional write), adding 1 to Seq when it changes anything. It
	// returns the stored record and whether it changed.
	Record(ctx context.Context, ev fleet.SessionRecord) (fleet.SessionRecord, bool, error)
	// Sessions reads the thing's session records in regions with strongly
	// consistent reads, in the order of regions, skipping the regions that
	// have none.
	Sessions(ctx context.Context, thing string, regions []string) ([]fleet.SessionRecord, error)
	// Publish stores p as the thing's presence item only if there is none,
	// or the stored one has a smaller Generation; otherwise it returns false
	// and nil and changes nothing.
	Publish(ctx context.Context, p fleet.Presence) (bool, error)
	// Get returns the thing's presence item (strongly consistent; ErrNotFound).
	Get(ctx context.Context, thing string) (fleet.Presence, error)
	// Connected returns up to limit presence items of connected devices
	// after cursor ("" for the start) through the sparse index
	// ConnectedIndex, and the cursor of the next page ("" at the end). The
	// cursor is opaque (ErrInvalid when not one Connected gave); a page may
	// hold fewer than limit items before the end. Index reads are eventually
	// consistent. limit < 1: ErrInvalid.
	Connected(ctx context.Context, limit int, cursor string) ([]fleet.Presence, string, error)
}

// Commands is one region's replica of the commands table (see
// internal/aws/ddbitem: a command item per command, and insert-only
// delivery and ack records beside it). A command read through the port is
// merged with its records (ddbitem.MergeCommandRecords). Times are stored in
// epoch milliseconds. Errors wrap the fleet sentinels; an invalid thing
// name or command id is ErrInvalid.
type Commands interface {
	// Create stores c only if no item has its key (ErrAlreadyExists).
	Create(ctx context.Context, c fleet.Command) error
	// Get returns the command, merged (ErrNotFound), strongly consistent.
	Get(ctx context.Context, thing, id string) (fleet.Command, error)
	// Page returns up to limit commands of thing with an id below the
	// cursor's ("" for the newest), newest first, merged, and the cursor of
	// the next page: opaque, "" only when no older command is left; a page
	// may be short before the end. A cursor Page did not give is ErrInvalid.
	Page(ctx context.Context, thing string, limit int, cursor string) ([]fleet.Command, string, error)
	// Open returns every command of thing that is neither ACKED nor EXPIRED
	// once merged (expiry by time is the caller's to judge), oldest first,
	// strongly consistent.
	Open(ctx context.Context, thing string) ([]fleet.Command, error)
	// Claim puts the delivery record of command id to session, only where
	// absent (ErrAlreadyExists: this connection had it already).
	Claim(ctx context.Context, thing, id, session, region string, at, expires time.Time) error
	// Unclaim deletes the delivery record (the compensation of Claim); an
	// absent record is a success.
	Unclaim(ctx context.Context, thing, id, session string) error
	// MarkSent sets Status SENT, SentAt, SentRegion, SentSession, adds 1 to
	// Deliveries and Version, only while Status is QUEUED or SENT and
	// ExpiresAt is after at (ErrConditionFailed; ErrNotFound when absent).
	MarkSent(ctx context.Context, thing, id, session, region string, at time.Time) error
	// Ack records the device's acknowledgement at `at`: the ack record (put
	// where absent; a second ack keeps the first) and Status ACKED, AckedAt,
	// Result on the item (unless ACKED already). An ack at or after
	// ExpiresAt is refused with ErrConditionFailed (the command expired
	// first); an unknown command is ErrNotFound.
	Ack(ctx context.Context, thing, id string, at time.Time, result string) error
	// Expire sets Status EXPIRED only while Status is QUEUED or SENT and
	// ExpiresAt is at or before now (ErrConditionFailed; ErrNotFound).
	Expire(ctx context.Context, thing, id string, now time.Time) error
}
