package ddbitem

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestReconcileCursorRoundTrip(t *testing.T) {
	if err := fleet.ValidateThingName(fleet.ReconcileCursorKey); err == nil {
		t.Fatalf("the cursor key %q is a valid thing name: a device's lease could take its place", fleet.ReconcileCursorKey)
	}
	started := time.UnixMilli(1700000000123).UTC()
	tests := []struct {
		name  string
		c     fleet.ReconcileCursor
		attrs map[string]string // attribute -> type, beyond the key
	}{
		{"every field", fleet.ReconcileCursor{Phase: "registry", Cursor: "opaque/1", Pass: 3, PassStarted: started, Revision: 7},
			map[string]string{AttrPhase: "S", AttrCursor: "S", AttrPass: "N", AttrPassStarted: "N", AttrRevision: "N"}},
		{"not started: empty strings and zero time left out", fleet.ReconcileCursor{Pass: 1, Revision: 1},
			map[string]string{AttrPass: "N", AttrRevision: "N"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			item := MarshalReconcileCursor(tt.c)
			if len(item) != len(tt.attrs)+1 {
				t.Errorf("item has %d attributes, want %d: %v", len(item), len(tt.attrs)+1, item)
			}
			if s, ok := item[AttrThingName].(*types.AttributeValueMemberS); !ok || s.Value != fleet.ReconcileCursorKey {
				t.Errorf("key %#v, want %q", item[AttrThingName], fleet.ReconcileCursorKey)
			}
			for name, typ := range tt.attrs {
				if got := avType(item[name]); got != typ {
					t.Errorf("%s: type %q, want %q", name, got, typ)
				}
			}
			if _, ok := item[AttrObligations]; ok {
				t.Error("the cursor item has Obligations: a pending scan would return it")
			}
			got, err := UnmarshalReconcileCursor(item)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.c {
				t.Errorf("round trip: got %+v, want %+v", got, tt.c)
			}
		})
	}
	if v := MarshalReconcileCursor(tests[0].c)[AttrPassStarted].(*types.AttributeValueMemberN).Value; v != "1700000000123" {
		t.Errorf("PassStarted = %s, want epoch milliseconds", v)
	}
}

func TestUnmarshalReconcileCursorInvalid(t *testing.T) {
	bad := []map[string]types.AttributeValue{
		LeaseKey("thing-1"), // a lease, not the cursor
		{AttrThingName: &types.AttributeValueMemberS{Value: fleet.ReconcileCursorKey}, AttrRevision: &types.AttributeValueMemberS{Value: "1"}},
		{AttrThingName: &types.AttributeValueMemberS{Value: fleet.ReconcileCursorKey}, AttrPass: &types.AttributeValueMemberN{Value: "1.5"}},
		{AttrThingName: &types.AttributeValueMemberS{Value: fleet.ReconcileCursorKey}, AttrPhase: &types.AttributeValueMemberN{Value: "1"}},
	}
	for i, item := range bad {
		if _, err := UnmarshalReconcileCursor(item); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("item %d: %v, want ErrInvalid", i, err)
		}
	}
}
