package fleet

import (
	"slices"
	"time"
)

// Lease is one device's record in one region's lease table: who may change
// the device's registry resources in that region right now (Owner, until
// Until, with the fencing counter Fence), and what the region knows of the
// device (Ledger).
//
// Exactly one run at a time holds a device's lease in a region: jitr,
// replicate and the reconciler all take it before they touch the device's
// thing, certificates or attachments there. A lease whose Until has passed
// is free: a run that crashed holds it only until then. Fence grows by one
// at every acquisition, and every write of a holder to the lease table is
// conditional on its Owner and Fence, so that a holder whose lease was taken
// over can no longer record anything.
type Lease struct {
	ThingName string
	// Owner is the run holding the lease, "" when it is free.
	Owner string
	Fence int64
	Until time.Time
	// Ledger is the region's record of the device, as the last holder left it.
	Ledger Ledger
}

// Held reports whether the lease is held at now.
func (l Lease) Held(now time.Time) bool { return l.Owner != "" && now.Before(l.Until) }

// Ledger is what one region knows of a device beyond its registry: the
// certificates mriot registered or converged there for it (so that a removal
// finds a certificate even when no thing names it and the inventory item is
// gone), the inventory item it last converged to, and the compensations a
// run could not finish.
type Ledger struct {
	// Certificates are the ids of the certificates mriot registered or
	// converged for the device in this region and did not delete, sorted.
	Certificates []string
	// Converged is the inventory item the region was last converged to
	// (zero: none, or the item was gone).
	Converged Converged
	// Obligations are compensations that failed: the next run for the device
	// here finishes them before it does anything else, or the reconciler does.
	Obligations []Obligation
}

// Converged names an inventory item version a region was converged to.
type Converged struct {
	Version       int64
	Status        Status
	CertificateID string
}

// Matches reports whether the region was converged to exactly d.
func (c Converged) Matches(d Device) bool {
	return c.Version == d.Version && c.Status == d.Status && c.CertificateID == d.CertificateID
}

// WithCertificates returns the ledger with ids added to its certificates.
func (l Ledger) WithCertificates(ids ...string) Ledger {
	out := slices.Clone(l.Certificates)
	for _, id := range ids {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	l.Certificates = out
	return l
}

// WithoutCertificate returns the ledger without id among its certificates.
func (l Ledger) WithoutCertificate(id string) Ledger {
	l.Certificates = slices.DeleteFunc(slices.Clone(l.Certificates), func(c string) bool { return c == id })
	return l
}

// Obligation kinds: the compensations of the convergence steps toward an
// ACTIVE device, each of which only takes something away. A compensation
// that grants access is never recorded: a run that must roll back converges
// to the inventory instead.
const (
	ObligationDeleteItem        = "DeleteItem"        // delete the inventory item at Version if it still holds Certificate from Region
	ObligationDetachPolicy      = "DetachPolicy"      // detach Policy from Principal
	ObligationDetachPrincipal   = "DetachPrincipal"   // detach Principal from Thing
	ObligationDeleteThing       = "DeleteThing"       // delete Thing if its createdBy is CreatedBy
	ObligationDeleteCertificate = "DeleteCertificate" // delete Certificate unless it is ACTIVE or REVOKED
)

// Obligation is a compensation a run could not finish, recorded with the
// device's lease so that the next run for the device in the region, or the
// reconciler, finishes it.
type Obligation struct {
	Kind        string    `dynamodbav:"Kind" json:"kind"`
	Thing       string    `dynamodbav:"Thing,omitempty" json:"thing,omitempty"`
	Certificate string    `dynamodbav:"Certificate,omitempty" json:"certificate,omitempty"`
	Principal   string    `dynamodbav:"Principal,omitempty" json:"principal,omitempty"`
	Policy      string    `dynamodbav:"Policy,omitempty" json:"policy,omitempty"`
	Version     int64     `dynamodbav:"Version,omitempty" json:"version,omitempty"`
	Region      string    `dynamodbav:"Region,omitempty" json:"region,omitempty"`
	CreatedBy   string    `dynamodbav:"CreatedBy,omitempty" json:"createdBy,omitempty"`
	Saga        string    `dynamodbav:"Saga" json:"saga"`
	Step        string    `dynamodbav:"Step" json:"step"`
	Since       time.Time `dynamodbav:"Since" json:"since"`
	Error       string    `dynamodbav:"Error,omitempty" json:"error,omitempty"`
}

// ReconcileCursor is the reconciler's progress through one region, kept in the
// region's lease table under the key ReconcileCursorKey (not a valid thing name).
type ReconcileCursor struct {
	Phase       string // "" = not started; the reconciler names its phases
	Cursor      string // opaque position within the phase
	Pass        int64  // number of the pass in progress (starts at 1)
	PassStarted time.Time
	Revision    int64 // incremented by every SaveCursor; 0 = never saved
}

// ReconcileCursorKey is the lease-table key of the reconciler's cursor item.
// The '#' makes it an invalid thing name, so that no device's lease can ever
// take its place.
const ReconcileCursorKey = "#reconcile"
