package awsddb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Leases is the device lease table of one region (a regional table: a lease
// is about this region's registry resources), holding the reconciler's
// cursor too.
type Leases struct{ common }

// NewLeases returns the lease adapter over table.
func NewLeases(client Client, table string) *Leases {
	return &Leases{common{client: client, table: table}}
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

// attempts counts the HTTP attempts the SDK's retryer makes for one call.
// A conditional write whose first attempt was applied but whose answer was
// lost (a 5xx, a connection reset) is sent again, and the retry's condition
// then fails on the write's own result. Acquire, Release and SaveCursor are
// not idempotent, so they tell that case from another writer's by the item
// a failed condition returns, and only when the call was retried.
type attempts struct{ n atomic.Int32 }

// option counts every attempt: a Finalize middleware after the retry
// middleware runs once per attempt.
func (a *attempts) option(o *dynamodb.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("mriotCountAttempts",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				a.n.Add(1)
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	})
}

func (a *attempts) retried() bool { return a.n.Load() > 1 }

// update runs one UpdateItem on thing's lease item; ReturnValues ALL_NEW
// gives the stored item to the writes that return the lease, and a failed
// condition returns the old item (ALL_OLD) to name a holder.
func (ls *Leases) update(ctx context.Context, thing string, expr expression.Expression, att *attempts) (*dynamodb.UpdateItemOutput, error) {
	return ls.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(ls.table),
		Key:                                 ddbitem.LeaseKey(thing),
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValues:                        types.ReturnValueAllNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}, att.option)
}

// Acquire takes the lease: SET Owner, LeaseUntil ADD Fence 1 under
// attribute_not_exists(Owner) OR LeaseUntil <= :now (epoch milliseconds).
// A failed condition returns the holder's item (ALL_OLD), which names the
// holder and its expiry in a *fleet.LeaseHeldError (an ErrBusy), unless the
// call was retried and the holder is this very acquisition (owner and until
// as requested): then an earlier attempt took the lease, and the item is
// the lease it stored.
func (ls *Leases) Acquire(ctx context.Context, thing, owner string, now, until time.Time) (fleet.Lease, error) {
	if err := checkLeaseArgs(thing, owner); err != nil {
		return fleet.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	cond := expression.AttributeNotExists(expression.Name(ddbitem.AttrOwner)).Or(
		expression.Name(ddbitem.AttrLeaseUntil).LessThanEqual(expression.Value(now.UnixMilli())))
	upd := expression.Set(expression.Name(ddbitem.AttrOwner), expression.Value(owner)).
		Set(expression.Name(ddbitem.AttrLeaseUntil), expression.Value(ddbitem.MillisValue(until))).
		Add(expression.Name(ddbitem.AttrFence), expression.Value(1))
	expr, err := expression.NewBuilder().WithCondition(cond).WithUpdate(upd).Build()
	if err != nil {
		return fleet.Lease{}, fmt.Errorf("acquire lease on %s: build expression: %w", thing, err)
	}
	var att attempts
	out, err := ls.update(ctx, thing, expr, &att)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) && len(ccf.Item) > 0 {
		held := &fleet.LeaseHeldError{ThingName: thing}
		if o, ok := ccf.Item[ddbitem.AttrOwner].(*types.AttributeValueMemberS); ok {
			held.Owner = o.Value
		}
		if n, ok := ccf.Item[ddbitem.AttrLeaseUntil].(*types.AttributeValueMemberN); ok {
			if ms, perr := strconv.ParseInt(n.Value, 10, 64); perr == nil {
				held.Until = time.UnixMilli(ms).UTC()
			}
		}
		if att.retried() && held.Owner == owner && held.Until.UnixMilli() == until.UnixMilli() {
			if l, uerr := ddbitem.UnmarshalLease(ccf.Item); uerr == nil {
				return l, nil
			}
		}
		return fleet.Lease{}, fmt.Errorf("acquire lease on %s: %w: %w", thing, held, err)
	}
	if err != nil {
		return fleet.Lease{}, ls.wrap(err, "acquire lease on %s", thing)
	}
	l, err := ddbitem.UnmarshalLease(out.Attributes)
	if err != nil {
		return fleet.Lease{}, fmt.Errorf("acquire lease on %s: %w", thing, err)
	}
	return l, nil
}

// holder is the condition of every write of a holder: Owner = :owner AND
// Fence = :fence. It fails on an absent item too, and UpdateItem then
// creates nothing.
func holder(l fleet.Lease) expression.ConditionBuilder {
	return expression.Name(ddbitem.AttrOwner).Equal(expression.Value(l.Owner)).And(
		expression.Name(ddbitem.AttrFence).Equal(expression.Value(l.Fence)))
}

// holderWrite runs a holder's update under the holder condition; a failed
// condition is fleet.ErrLeaseLost, unless applied (given the item a failed
// condition returns) tells that a retried call's earlier attempt did the
// write.
func (ls *Leases) holderWrite(ctx context.Context, l fleet.Lease, upd expression.UpdateBuilder, op string,
	applied func(old map[string]types.AttributeValue) bool) (*dynamodb.UpdateItemOutput, error) {
	expr, err := expression.NewBuilder().WithCondition(holder(l)).WithUpdate(upd).Build()
	if err != nil {
		return nil, fmt.Errorf("%s: build expression: %w", op, err)
	}
	var att attempts
	out, err := ls.update(ctx, l.ThingName, expr, &att)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		if applied != nil && att.retried() && len(ccf.Item) > 0 && applied(ccf.Item) {
			return &dynamodb.UpdateItemOutput{Attributes: ccf.Item}, nil
		}
		return nil, fmt.Errorf("%s: %s (fence %d) no longer holds the lease: %w: %w", op, l.Owner, l.Fence, fleet.ErrLeaseLost, err)
	}
	if err != nil {
		return nil, ls.wrap(err, "%s", op)
	}
	return out, nil
}

// Renew sets LeaseUntil to until under the holder condition.
func (ls *Leases) Renew(ctx context.Context, l fleet.Lease, until time.Time) (fleet.Lease, error) {
	if err := checkLeaseArgs(l.ThingName, l.Owner); err != nil {
		return fleet.Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	op := "renew lease on " + l.ThingName
	// Renew and Note are idempotent: a retry of an applied attempt meets the
	// same holder and succeeds again.
	out, err := ls.holderWrite(ctx, l, expression.Set(expression.Name(ddbitem.AttrLeaseUntil), expression.Value(ddbitem.MillisValue(until))), op, nil)
	if err != nil {
		return fleet.Lease{}, err
	}
	got, err := ddbitem.UnmarshalLease(out.Attributes)
	if err != nil {
		return fleet.Lease{}, fmt.Errorf("%s: %w", op, err)
	}
	return got, nil
}

// Note adds certIDs to the Certificates string set (ADD Certificates :ids)
// under the holder condition; no ids is a success without a call.
func (ls *Leases) Note(ctx context.Context, l fleet.Lease, certIDs ...string) error {
	if err := checkLeaseArgs(l.ThingName, l.Owner); err != nil {
		return fmt.Errorf("note certificates: %w", err)
	}
	if len(certIDs) == 0 {
		return nil
	}
	// A set in a request must not repeat a member (ValidationException).
	ids := slices.Compact(slices.Sorted(slices.Values(certIDs)))
	upd := expression.Add(expression.Name(ddbitem.AttrCertificates), expression.Value(ddbitem.CertificatesValue(ids)))
	_, err := ls.holderWrite(ctx, l, upd, "note certificates of "+l.ThingName, nil)
	return err
}

// Release frees the lease and writes the ledger in one update under the
// holder condition: REMOVE Owner, LeaseUntil, and the ledger attributes
// (SET, or REMOVE for those ddbitem.LedgerAttributes leaves nil). The fence
// stays. A retried call whose condition fails on a free item at l's fence
// was released by its own earlier attempt: only l's holder can free the
// item at that fence, and any acquisition since would have raised it.
func (ls *Leases) Release(ctx context.Context, l fleet.Lease, ledger fleet.Ledger) error {
	if err := checkLeaseArgs(l.ThingName, l.Owner); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	attrs, err := ddbitem.LedgerAttributes(ledger)
	if err != nil {
		return fmt.Errorf("release lease on %s: %w", l.ThingName, err)
	}
	upd := expression.Remove(expression.Name(ddbitem.AttrOwner)).Remove(expression.Name(ddbitem.AttrLeaseUntil))
	for _, name := range slices.Sorted(maps.Keys(attrs)) { // sorted: the same request every time
		if v := attrs[name]; v == nil {
			upd = upd.Remove(expression.Name(name))
		} else {
			upd = upd.Set(expression.Name(name), expression.Value(v))
		}
	}
	_, err = ls.holderWrite(ctx, l, upd, "release lease on "+l.ThingName, func(old map[string]types.AttributeValue) bool {
		_, held := old[ddbitem.AttrOwner]
		fence, ok := old[ddbitem.AttrFence].(*types.AttributeValueMemberN)
		return !held && ok && fence.Value == strconv.FormatInt(l.Fence, 10)
	})
	return err
}

// Get reads the device's lease item with a strongly consistent read
// (ErrNotFound).
func (ls *Leases) Get(ctx context.Context, thing string) (fleet.Lease, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fleet.Lease{}, fmt.Errorf("get lease: %w", err)
	}
	return getItem(ctx, &ls.common, ddbitem.LeaseKey(thing), ddbitem.UnmarshalLease, "get lease of "+thing)
}

// Pending scans one page of up to limit items after cursor with the filter
// attribute_exists(Obligations). DynamoDB applies Limit before the filter,
// so a page may be empty with a next cursor. The cursor is the thing name
// of the last item read, which may be the reconciler's cursor item
// (fleet.ReconcileCursorKey, not a valid thing name): it is not validated.
func (ls *Leases) Pending(ctx context.Context, limit int, cursor string) ([]fleet.Lease, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list pending leases: limit %d: must be at least 1: %w", limit, fleet.ErrInvalid)
	}
	expr, err := expression.NewBuilder().WithFilter(expression.AttributeExists(expression.Name(ddbitem.AttrObligations))).Build()
	if err != nil {
		return nil, "", fmt.Errorf("list pending leases: build filter: %w", err)
	}
	in := &dynamodb.ScanInput{
		TableName:                 aws.String(ls.table),
		FilterExpression:          expr.Filter(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		Limit:                     aws.Int32(int32(min(limit, 1<<30))),
		ConsistentRead:            aws.Bool(true),
	}
	if cursor != "" {
		in.ExclusiveStartKey = ddbitem.LeaseKey(cursor)
	}
	out, err := ls.client.Scan(ctx, in)
	if err != nil {
		return nil, "", ls.wrap(err, "list pending leases")
	}
	leases := make([]fleet.Lease, 0, len(out.Items))
	for _, item := range out.Items {
		l, err := ddbitem.UnmarshalLease(item)
		if err != nil {
			return nil, "", fmt.Errorf("list pending leases: %w", err)
		}
		leases = append(leases, l)
	}
	next := ""
	if len(out.LastEvaluatedKey) > 0 {
		s, ok := out.LastEvaluatedKey[ddbitem.AttrThingName].(*types.AttributeValueMemberS)
		if !ok || s.Value == "" {
			return nil, "", fmt.Errorf("list pending leases: last evaluated key without %s: %w", ddbitem.AttrThingName, fleet.ErrInvalid)
		}
		next = s.Value
	}
	return leases, next, nil
}

// LoadCursor reads the reconciler's cursor item with a strongly consistent
// read (the zero cursor when there is none).
func (ls *Leases) LoadCursor(ctx context.Context) (fleet.ReconcileCursor, error) {
	c, err := getItem(ctx, &ls.common, ddbitem.ReconcileCursorKey(), ddbitem.UnmarshalReconcileCursor, "load reconcile cursor")
	if errors.Is(err, fleet.ErrNotFound) {
		return fleet.ReconcileCursor{}, nil
	}
	return c, err
}

// SaveCursor puts the cursor item with Revision c.Revision+1 under
// Revision = :rev, or attribute_not_exists(Revision) OR Revision = :rev for
// revision 0 (no cursor counts as revision 0); a failed condition is
// ErrConditionFailed, unless the call was retried and the stored item is
// exactly the one it puts (an earlier attempt saved it).
func (ls *Leases) SaveCursor(ctx context.Context, c fleet.ReconcileCursor) (fleet.ReconcileCursor, error) {
	saved := c
	saved.Revision = c.Revision + 1
	cond := expression.Name(ddbitem.AttrRevision).Equal(expression.Value(c.Revision))
	if c.Revision == 0 {
		cond = expression.AttributeNotExists(expression.Name(ddbitem.AttrRevision)).Or(cond)
	}
	expr, err := expression.NewBuilder().WithCondition(cond).Build()
	if err != nil {
		return fleet.ReconcileCursor{}, fmt.Errorf("save reconcile cursor: build condition: %w", err)
	}
	item := ddbitem.MarshalReconcileCursor(saved)
	var att attempts
	_, err = ls.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(ls.table),
		Item:                                item,
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}, att.option)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) && att.retried() && reflect.DeepEqual(ccf.Item, item) {
		return saved, nil
	}
	if err != nil {
		return fleet.ReconcileCursor{}, ls.wrap(err, "save reconcile cursor at revision %d", c.Revision)
	}
	return saved, nil
}
