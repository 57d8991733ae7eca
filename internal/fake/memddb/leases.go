package memddb

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// LeasesKey is the key schema of a region's device lease table.
var LeasesKey = KeySchema{HashKey: ddbitem.LeasesHashKey}

// Leases is the device lease port on a regional table (a GlobalTable with a
// single region). Its conditions are those of the AWS adapter, evaluated
// atomically by the table's conditional writes.
type Leases struct{ t *Table }

// NewLeases returns the lease port of a table whose key schema is LeasesKey.
func NewLeases(t *Table) *Leases { return &Leases{t: t} }

// Table returns the table the port works on.
func (ls *Leases) Table() *Table { return ls.t }

func millis(item map[string]types.AttributeValue, attr string) int64 {
	v, _ := strconv.ParseInt(numberAttr(item, attr), 10, 64)
	return v
}

// Acquire takes the lease: SET Owner, LeaseUntil ADD Fence 1 under
// attribute_not_exists(Owner) OR LeaseUntil <= :now; a failed condition
// returns the holder (*fleet.LeaseHeldError, an ErrBusy).
func (ls *Leases) Acquire(ctx context.Context, thing, owner string, now, until time.Time) (fleet.Lease, error) {
	if err := checkLeaseArgs(thing, owner); err != nil {
		return fleet.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	var held *fleet.LeaseHeldError
	var stored map[string]types.AttributeValue
	err := ls.t.UpdateItem(ctx, ddbitem.LeaseKey(thing), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if old != nil {
			if o := stringAttr(old, ddbitem.AttrOwner); o != "" && millis(old, ddbitem.AttrLeaseUntil) > now.UnixMilli() {
				held = &fleet.LeaseHeldError{ThingName: thing, Owner: o, Until: time.UnixMilli(millis(old, ddbitem.AttrLeaseUntil)).UTC()}
				return nil, fmt.Errorf("ConditionalCheckFailedException: %w", held)
			}
		}
		item := maps.Clone(old)
		if item == nil {
			item = ddbitem.LeaseKey(thing)
		}
		item[ddbitem.AttrOwner] = &types.AttributeValueMemberS{Value: owner}
		item[ddbitem.AttrLeaseUntil] = ddbitem.MillisValue(until)
		item[ddbitem.AttrFence] = &types.AttributeValueMemberN{Value: strconv.FormatInt(millis(old, ddbitem.AttrFence)+1, 10)}
		stored = item
		return item, nil
	})
	if err != nil {
		if held != nil {
			return fleet.Lease{}, fmt.Errorf("acquire lease on %s: %w", thing, held)
		}
		return fleet.Lease{}, fmt.Errorf("acquire lease on %s: %w", thing, err)
	}
	return ddbitem.UnmarshalLease(stored)
}

// holder is the condition of every write of a holder: Owner = :owner AND
// Fence = :fence; a failed condition is fleet.ErrLeaseLost.
func holder(l fleet.Lease, old map[string]types.AttributeValue) error {
	if old == nil || stringAttr(old, ddbitem.AttrOwner) != l.Owner || millis(old, ddbitem.AttrFence) != l.Fence {
		return fmt.Errorf("ConditionalCheckFailedException: %s (fence %d) no longer holds the lease on %s: %w", l.Owner, l.Fence, l.ThingName, fleet.ErrLeaseLost)
	}
	return nil
}

// Renew extends the lease to until under the holder condition.
func (ls *Leases) Renew(ctx context.Context, l fleet.Lease, until time.Time) (fleet.Lease, error) {
	if err := checkLeaseArgs(l.ThingName, l.Owner); err != nil {
		return fleet.Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	var stored map[string]types.AttributeValue
	err := ls.t.UpdateItem(ctx, ddbitem.LeaseKey(l.ThingName), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if err := holder(l, old); err != nil {
			return nil, err
		}
		item := maps.Clone(old)
		item[ddbitem.AttrLeaseUntil] = ddbitem.MillisValue(until)
		stored = item
		return item, nil
	})
	if err != nil {
		return fleet.Lease{}, fmt.Errorf("renew lease on %s: %w", l.ThingName, err)
	}
	return ddbitem.UnmarshalLease(stored)
}

// Note adds certificate ids to the ledger under the holder condition (ADD
// Certificates :ids), before the holder registers them.
func (ls *Leases) Note(ctx context.Context, l fleet.Lease, certIDs ...string) error {
	if err := checkLeaseArgs(l.ThingName, l.Owner); err != nil {
		return fmt.Errorf("note certificates: %w", err)
	}
	if len(certIDs) == 0 {
		return nil
	}
	err := ls.t.UpdateItem(ctx, ddbitem.LeaseKey(l.ThingName), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if err := holder(l, old); err != nil {
			return nil, err
		}
		item := maps.Clone(old)
		var ids []string
		if ss, ok := old[ddbitem.AttrCertificates].(*types.AttributeValueMemberSS); ok {
			ids = slices.Clone(ss.Value)
		}
		for _, id := range certIDs {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		item[ddbitem.AttrCertificates] = ddbitem.CertificatesValue(ids)
		return item, nil
	})
	if err != nil {
		return fmt.Errorf("note certificates of %s: %w", l.ThingName, err)
	}
	return nil
}

// Release frees the lease and stores the ledger under the holder condition.
func (ls *Leases) Release(ctx context.Context, l fleet.Lease, ledger fleet.Ledger) error {
	if err := checkLeaseArgs(l.ThingName, l.Owner); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	attrs, err := ddbitem.LedgerAttributes(ledger)
	if err != nil {
		return fmt.Errorf("release lease on %s: %w", l.ThingName, err)
	}
	err = ls.t.UpdateItem(ctx, ddbitem.LeaseKey(l.ThingName), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if err := holder(l, old); err != nil {
			return nil, err
		}
		item := maps.Clone(old)
		delete(item, ddbitem.AttrOwner)
		delete(item, ddbitem.AttrLeaseUntil)
		for k, v := range attrs {
			if v == nil {
				delete(item, k)
			} else {
				item[k] = v
			}
		}
		return item, nil
	})
	if err != nil {
		return fmt.Errorf("release lease on %s: %w", l.ThingName, err)
	}
	return nil
}

// Get reads a device's lease item (fleet.ErrNotFound when there is none).
func (ls *Leases) Get(ctx context.Context, thing string) (fleet.Lease, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fleet.Lease{}, fmt.Errorf("get lease: %w", err)
	}
	item, err := ls.t.GetItem(ctx, ddbitem.LeaseKey(thing))
	if err != nil {
		return fleet.Lease{}, fmt.Errorf("get lease of %s: %w", thing, err)
	}
	if item == nil {
		return fleet.Lease{}, fmt.Errorf("get lease of %s: %w", thing, fleet.ErrNotFound)
	}
	return ddbitem.UnmarshalLease(item)
}

// Pending scans up to limit lease items after cursor and returns those whose
// ledger holds obligations (Scan with attribute_exists(Obligations): the
// limit counts the items read, so a page may be empty with a next cursor).
func (ls *Leases) Pending(ctx context.Context, limit int, cursor string) ([]fleet.Lease, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list pending leases: limit %d: %w", limit, fleet.ErrInvalid)
	}
	var start map[string]types.AttributeValue
	if cursor != "" {
		start = ddbitem.LeaseKey(cursor)
	}
	items, last, err := ls.t.Scan(ctx, start, limit)
	if err != nil {
		return nil, "", fmt.Errorf("list pending leases: %w", err)
	}
	var out []fleet.Lease
	for _, item := range items {
		if _, ok := item[ddbitem.AttrObligations]; !ok {
			continue
		}
		l, err := ddbitem.UnmarshalLease(item)
		if err != nil {
			return nil, "", fmt.Errorf("list pending leases: %w", err)
		}
		out = append(out, l)
	}
	next := ""
	if last != nil {
		next = stringAttr(last, ddbitem.AttrThingName)
	}
	return out, next, nil
}

// LoadCursor reads the reconciler's cursor item (the zero cursor when there
// is none).
func (ls *Leases) LoadCursor(ctx context.Context) (fleet.ReconcileCursor, error) {
	item, err := ls.t.GetItem(ctx, ddbitem.ReconcileCursorKey())
	if err != nil {
		return fleet.ReconcileCursor{}, fmt.Errorf("load reconcile cursor: %w", err)
	}
	if item == nil {
		return fleet.ReconcileCursor{}, nil
	}
	c, err := ddbitem.UnmarshalReconcileCursor(item)
	if err != nil {
		return fleet.ReconcileCursor{}, fmt.Errorf("load reconcile cursor: %w", err)
	}
	return c, nil
}

// SaveCursor puts the cursor item with Revision c.Revision+1 under
// attribute_not_exists(Revision) OR Revision = :rev (the first only for
// revision 0: a missing cursor counts as revision 0).
func (ls *Leases) SaveCursor(ctx context.Context, c fleet.ReconcileCursor) (fleet.ReconcileCursor, error) {
	saved := c
	saved.Revision = c.Revision + 1
	want := strconv.FormatInt(c.Revision, 10)
	err := ls.t.PutItem(ctx, ddbitem.MarshalReconcileCursor(saved), func(old map[string]types.AttributeValue) error {
		got := numberAttr(old, ddbitem.AttrRevision)
		if got == want || (got == "" && c.Revision == 0) {
			return nil
		}
		return fmt.Errorf("ConditionalCheckFailedException: stored revision is %q, expected %s: %w", got, want, fleet.ErrConditionFailed)
	})
	if err != nil {
		return fleet.ReconcileCursor{}, fmt.Errorf("save reconcile cursor at revision %d: %w", c.Revision, err)
	}
	return saved, nil
}

func checkLeaseArgs(thing, owner string) error {
	if err := fleet.ValidateThingName(thing); err != nil {
		return err
	}
	if owner == "" {
		return fmt.Errorf("no owner: %w", fleet.ErrInvalid)
	}
	return nil
}
