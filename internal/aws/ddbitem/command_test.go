package ddbitem_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

func TestCommandRoundTrip(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []fleet.Command{
		{ThingName: "d", ID: "1777636800000-00000000000000a1", Payload: json.RawMessage(`{"a":1}`), Status: fleet.CommandQueued,
			CreatedAt: at, ExpiresAt: at.Add(time.Hour), Version: 1},
		{ThingName: "d", ID: "c", Payload: json.RawMessage(`"x"`), Status: fleet.CommandAcked, CreatedAt: at, ExpiresAt: at.Add(time.Hour),
			SentAt: at.Add(time.Second), SentRegion: "eu-west-1", SentSession: "s", Deliveries: 2, AckedAt: at.Add(2 * time.Second), Result: "ok", Version: 4},
	}
	for _, c := range tests {
		item, err := ddbitem.MarshalCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ddbitem.UnmarshalCommand(item)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip: %+v, want %+v", got, c)
		}
	}
	if _, err := ddbitem.MarshalCommand(fleet.Command{ThingName: "d", ID: "a/b", Status: fleet.CommandQueued}); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := ddbitem.UnmarshalCommand(ddbitem.MarshalDelivery("d", "c", "s", "r", at, at)); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("a delivery record decoded as a command: %v", err)
	}
}

func TestMergePartition(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cmd := func(id string, st fleet.CommandStatus) map[string]types.AttributeValue {
		item, err := ddbitem.MarshalCommand(fleet.Command{ThingName: "d", ID: id, Payload: json.RawMessage(`1`), Status: st, CreatedAt: at, ExpiresAt: at.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return item
	}
	tests := []struct {
		name  string
		items []map[string]types.AttributeValue
		want  map[string]fleet.CommandStatus
		deliv map[string]int
	}{
		{"plain", []map[string]types.AttributeValue{cmd("b", fleet.CommandQueued), cmd("a", fleet.CommandSent)},
			map[string]fleet.CommandStatus{"a": fleet.CommandSent, "b": fleet.CommandQueued}, map[string]int{"a": 0, "b": 0}},
		{"a delivery record makes QUEUED SENT", []map[string]types.AttributeValue{ddbitem.MarshalDelivery("d", "a", "s1", "r", at, at), cmd("a", fleet.CommandQueued)},
			map[string]fleet.CommandStatus{"a": fleet.CommandSent}, map[string]int{"a": 1}},
		{"an ack record wins over a lost status", []map[string]types.AttributeValue{
			ddbitem.MarshalDelivery("d", "a", "s1", "r", at, at), ddbitem.MarshalDelivery("d", "a", "s2", "r", at, at),
			ddbitem.MarshalAck("d", "a", at, "ok", at), cmd("a", fleet.CommandSent)},
			map[string]fleet.CommandStatus{"a": fleet.CommandAcked}, map[string]int{"a": 2}},
		{"records without their command are dropped", []map[string]types.AttributeValue{ddbitem.MarshalAck("d", "z", at, "", at), cmd("a", fleet.CommandQueued)},
			map[string]fleet.CommandStatus{"a": fleet.CommandQueued}, map[string]int{"a": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ddbitem.MergePartition(tt.items)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d commands, want %d", len(got), len(tt.want))
			}
			for _, c := range got {
				if c.Status != tt.want[c.ID] || c.Deliveries != tt.deliv[c.ID] {
					t.Errorf("%s: %s with %d deliveries, want %s with %d", c.ID, c.Status, c.Deliveries, tt.want[c.ID], tt.deliv[c.ID])
				}
			}
		})
	}
}

func TestCommandCursor(t *testing.T) {
	id := "1777636800000-00000000000000a1"
	got, err := ddbitem.ParseCommandCursor(ddbitem.CommandCursor(id))
	if err != nil || got != id {
		t.Fatalf("round trip %q %v", got, err)
	}
	for _, bad := range []string{"!!", ddbitem.CommandCursor("a/b")} {
		if _, err := ddbitem.ParseCommandCursor(bad); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("cursor %q: %v", bad, err)
		}
	}
}
