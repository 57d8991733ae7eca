package dst

import (
	"context"
	"errors"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
)

// Mutations break the system on purpose, from the outside of the code under
// test, so that a test can prove the simulation notices: each removes one
// mechanism the convergence depends on.
type Mutations struct {
	// NoLeases: every run gets the device's lease at once, whoever holds it
	// (several writers per device per region).
	NoLeases bool
	// NoRevocationRecords: revocation records are neither written nor read
	// (the item's status alone, as global tables' last writer wins leaves it).
	NoRevocationRecords bool
	// NoReconciler: the reconciler never runs (what the events miss stays
	// missed).
	NoReconciler bool
	// NoRetirement: a rotated-out certificate's grace never ends (every
	// function reads its RetireAt a century later).
	NoRetirement bool
}

// anyLease hands out the lease whoever holds it: a lease table that
// excludes nobody.
type anyLease struct{ *memddb.Leases }

func (l anyLease) Acquire(ctx context.Context, thing, owner string, now, until time.Time) (fleet.Lease, error) {
	cur, err := l.Leases.Get(ctx, thing)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return fleet.Lease{}, err
	}
	return fleet.Lease{ThingName: thing, Owner: owner, Fence: cur.Fence, Until: until, Ledger: cur.Ledger}, nil
}

func (l anyLease) Renew(_ context.Context, le fleet.Lease, until time.Time) (fleet.Lease, error) {
	le.Until = until
	return le, nil
}

func (l anyLease) Note(context.Context, fleet.Lease, ...string) error { return nil }

func (l anyLease) Release(context.Context, fleet.Lease, fleet.Ledger) error { return nil }

// noRecords is an inventory without revocation records.
type noRecords struct{ *memddb.Inventory }

func (noRecords) Revocation(_ context.Context, thing string) (fleet.Revocation, error) {
	return fleet.Revocation{}, fleet.ErrNotFound
}

func (noRecords) Revoke(context.Context, fleet.Revocation) error { return nil }

func (noRecords) Revocations(context.Context, int, string) ([]fleet.Revocation, string, error) {
	return nil, "", nil
}
