package faultmatrix

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/fake/memddb"
)

// toy is a two-step workflow on one table: put item "a", then item "b",
// compensating "a" by deleting it. Flags break it in the ways the matrix
// must notice.
type toy struct {
	noUndo           bool // drop the compensation of "a"
	undoOnRetryable  bool // compensate on a retryable failure too
	blindPut         bool // put without a condition: a redelivery rewrites
	swallowTerminal  bool // return nil after a rollback
	counterOnReplays bool // every delivery writes a new item
	n                int
}

func (w *toy) world(in *Injector) (*World, error) {
	g := memddb.NewGlobalTable("t", memddb.InventoryKey, []string{"r"})
	tbl := g.Replica("r")
	tbl.SetHook(in.Before("ddb"))
	tbl.SetAfter(in.After("ddb"))
	put := func(ctx context.Context, key string) (bool, error) {
		item := map[string]types.AttributeValue{"ThingName": &types.AttributeValueMemberS{Value: key}}
		var cond memddb.Condition
		if !w.blindPut {
			cond = func(old map[string]types.AttributeValue) error {
				if old != nil {
					return fleet.ErrConditionFailed
				}
				return nil
			}
		}
		err := tbl.PutItem(ctx, item, cond)
		if errors.Is(err, fleet.ErrConditionFailed) {
			return false, nil
		}
		return err == nil, err
	}
	deliver := func(ctx context.Context) error {
		if w.counterOnReplays {
			w.n++
			if _, err := put(ctx, fmt.Sprintf("n%d", w.n)); err != nil {
				return err
			}
		}
		stepA := saga.Step{Name: "a", Do: func(ctx context.Context) (bool, error) { return put(ctx, "a") }}
		if !w.noUndo {
			stepA.Undo = func(ctx context.Context) error {
				return tbl.DeleteItem(ctx, map[string]types.AttributeValue{"ThingName": &types.AttributeValueMemberS{Value: "a"}}, nil)
			}
		}
		stepB := saga.Step{Name: "b", Do: func(ctx context.Context) (bool, error) { return put(ctx, "b") }}
		r := saga.Runner{}
		if w.undoOnRetryable {
			r.Classify = func(error) bool { return false }
		}
		_, err := r.Run(ctx, saga.Saga{Name: "toy", ID: "toy", Steps: []saga.Step{stepA, stepB}})
		if w.swallowTerminal && err != nil && !saga.IsRetryable(err) {
			return nil
		}
		return err
	}
	return &World{Deliver: deliver, State: func() any { return tbl.Snapshot() }, Close: g.Close}, nil
}

func TestRun(t *testing.T) {
	tests := []struct {
		name string
		toy  toy
		want string // "" for a pass, else a substring of the report
	}{
		{"correct", toy{}, ""},
		{"no compensation", toy{noUndo: true}, "(a) terminal failure"},
		{"compensates a retryable failure", toy{undoOnRetryable: true}, "(b) retryable failure"},
		{"swallows a terminal failure", toy{swallowTerminal: true}, "delivery succeeded"},
		{"duplicate writes again", toy{blindPut: true}, "(d) duplicate called ddb:PutItem"},
		{"not idempotent", toy{counterOnReplays: true}, "(d) duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.toy
			_, err := Run(Scenario{Name: tt.name, New: func(in *Injector) (*World, error) {
				fresh := w // every world starts from the same flags
				return fresh.world(in)
			}})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("matrix failed a correct workflow: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("matrix passed a broken workflow (want %q)", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("report does not mention %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestMutating(t *testing.T) {
	for op, want := range map[string]bool{
		"PutItem": true, "DeleteItem": true, "UpdateThing": true, "CreateThing": true, "AttachPolicy": true,
		"DetachThingPrincipal": true, "RegisterCertificate": true, "GetItem": false, "DescribeThing": false,
		"ListThingPrincipals": false, "Query": false,
	} {
		if Mutating(op) != want {
			t.Errorf("Mutating(%s) = %v", op, !want)
		}
	}
}
