package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/workflow/commands"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

type publisher struct {
	mu     sync.Mutex
	topics []string
	fail   error
}

func (p *publisher) Publish(_ context.Context, topic string, _ []byte, qos int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	if qos != 1 {
		return errors.New("qos is not 1")
	}
	p.topics = append(p.topics, topic)
	return nil
}

type world struct {
	store    *memddb.Commands
	presence *memddb.Table
	inv      *memddb.Inventory
	pub      *publisher
	h        *commands.Handler
	now      time.Time
	metrics  *obs.Recorder
	region   string
}

func newWorld(t *testing.T, region string) *world {
	t.Helper()
	regions := []string{"eu-west-1", "us-west-2"}
	cg := memddb.NewGlobalTable("commands", memddb.CommandsKey, regions)
	pg := memddb.NewGlobalTable("presence", memddb.PresenceKey, regions, memddb.PresenceIndexes)
	ig := memddb.NewGlobalTable("inventory", memddb.InventoryKey, regions, memddb.InventoryIndexes)
	t.Cleanup(func() { cg.Close(); pg.Close(); ig.Close() })
	w := &world{store: memddb.NewCommands(cg.Replica(region)), presence: pg.Replica(region),
		inv: memddb.NewInventory(ig.Replica(region)), pub: &publisher{}, now: t0, metrics: obs.NewRecorder(), region: region}
	h, err := commands.New(commands.Config{Store: w.store, Presence: memddb.NewPresence(w.presence), Devices: w.inv,
		Publisher: w.pub, Region: region, Now: func() time.Time { return w.now }, Metrics: w.metrics})
	if err != nil {
		t.Fatal(err)
	}
	w.h = h
	return w
}

// handlerWith is a handler over w's tables with another publisher.
func (w *world) handlerWith(t *testing.T, pub commands.Publisher) *commands.Handler {
	t.Helper()
	h, err := commands.New(commands.Config{Store: w.store, Presence: memddb.NewPresence(w.presence), Devices: w.inv,
		Publisher: pub, Region: w.region, Now: func() time.Time { return w.now }, Metrics: w.metrics})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (w *world) device(t *testing.T, name string, status fleet.Status) {
	t.Helper()
	if err := w.inv.Create(context.Background(), fleet.Device{ThingName: name, CertificateID: "c-" + name, Status: status,
		OriginRegion: "eu-west-1", Version: 1}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) connect(t *testing.T, thing string, connected bool, region, session string) events.DynamoDBEventRecord {
	t.Helper()
	return w.connectSince(t, thing, connected, region, session, w.now)
}

func (w *world) connectSince(t *testing.T, thing string, connected bool, region, session string, since time.Time) events.DynamoDBEventRecord {
	t.Helper()
	key := ddbitem.DeviceKey(thing)
	var old map[string]types.AttributeValue
	old, _ = w.presence.GetItem(context.Background(), key)
	item, err := ddbitem.MarshalPresence(fleet.Presence{ThingName: thing, Connected: connected, Region: region, SessionID: session,
		Since: since, LastSeen: w.now, EventAt: w.now, Version: 1, Generation: 1, UpdatedAt: w.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.presence.PutItem(context.Background(), item, nil); err != nil {
		t.Fatal(err)
	}
	newImg, _ := ddbitem.ToStreamImage(item)
	oldImg, _ := ddbitem.ToStreamImage(old)
	name := "MODIFY"
	if old == nil {
		name = "INSERT"
	}
	keys, _ := ddbitem.ToStreamImage(ddbitem.PresenceKey(thing))
	return events.DynamoDBEventRecord{EventName: name, EventSource: "aws:dynamodb",
		Change: events.DynamoDBStreamRecord{Keys: keys, NewImage: newImg, OldImage: oldImg, SequenceNumber: "1", StreamViewType: "NEW_AND_OLD_IMAGES"}}
}

func (w *world) command(t *testing.T, thing string, ttl time.Duration) (fleet.Command, events.DynamoDBEventRecord) {
	t.Helper()
	c := fleet.Command{ThingName: thing, ID: fleet.NewCommandID(w.now), Payload: json.RawMessage(`{"op":"reboot"}`),
		Status: fleet.CommandQueued, CreatedAt: w.now, ExpiresAt: w.now.Add(ttl), Version: 1}
	if err := w.store.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	item, _ := ddbitem.MarshalCommand(c)
	img, _ := ddbitem.ToStreamImage(item)
	return c, events.DynamoDBEventRecord{EventName: "INSERT", EventSource: "aws:dynamodb",
		Change: events.DynamoDBStreamRecord{NewImage: img, SequenceNumber: "2", StreamViewType: "NEW_AND_OLD_IMAGES"}}
}

func (w *world) invoke(t *testing.T, recs ...events.DynamoDBEventRecord) events.DynamoDBEventResponse {
	t.Helper()
	b, _ := json.Marshal(events.DynamoDBEvent{Records: recs})
	out, err := w.h.Invoke(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	var resp events.DynamoDBEventResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func (w *world) status(t *testing.T, c fleet.Command) fleet.Command {
	t.Helper()
	got, err := w.store.Get(context.Background(), c.ThingName, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestDelivery(t *testing.T) {
	const here, there = "eu-west-1", "us-west-2"
	tests := []struct {
		name string
		// run arranges and acts; it returns the command.
		run        func(t *testing.T, w *world) fleet.Command
		topics     int
		wantStatus fleet.CommandStatus
	}{
		{"new command to a device connected here is sent", func(t *testing.T, w *world) fleet.Command {
			w.connect(t, "dev", true, here, "s1")
			c, rec := w.command(t, "dev", time.Hour)
			w.invoke(t, rec)
			return c
		}, 1, fleet.CommandSent},
		{"the same INSERT twice is one delivery", func(t *testing.T, w *world) fleet.Command {
			w.connect(t, "dev", true, here, "s1")
			c, rec := w.command(t, "dev", time.Hour)
			w.invoke(t, rec, rec)
			w.invoke(t, rec)
			return c
		}, 1, fleet.CommandSent},
		{"a device connected elsewhere is not published to here", func(t *testing.T, w *world) fleet.Command {
			w.connect(t, "dev", true, there, "s1")
			c, rec := w.command(t, "dev", time.Hour)
			w.invoke(t, rec)
			return c
		}, 0, fleet.CommandQueued},
		{"an offline device gets it when it connects here, once per connection", func(t *testing.T, w *world) fleet.Command {
			c, rec := w.command(t, "dev", time.Hour)
			w.invoke(t, rec)
			con := w.connect(t, "dev", true, here, "s1")
			w.invoke(t, con, con)
			w.now = w.now.Add(time.Second)
			w.connect(t, "dev", false, here, "s1")
			con2 := w.connect(t, "dev", true, here, "s2")
			w.invoke(t, con2)
			return c
		}, 2, fleet.CommandSent},
		{"a publish after the new connection began reached it: its connect does not publish again", func(t *testing.T, w *world) fleet.Command {
			w.connect(t, "dev", true, here, "s1")
			w.now = w.now.Add(5 * time.Second)
			c, rec := w.command(t, "dev", time.Hour)
			w.invoke(t, rec) // presence still says s1; the broker routes it to s2, subscribed since
			w.invoke(t, w.connectSince(t, "dev", true, here, "s2", t0.Add(time.Second)))
			return c
		}, 1, fleet.CommandSent},
		{"a publish within the new connection's subscribe grace is published again", func(t *testing.T, w *world) fleet.Command {
			w.connect(t, "dev", true, here, "s1")
			w.now = w.now.Add(2 * time.Second)
			c, rec := w.command(t, "dev", time.Hour)
			w.invoke(t, rec)
			w.invoke(t, w.connectSince(t, "dev", true, here, "s2", t0.Add(time.Second)))
			return c
		}, 2, fleet.CommandSent},
		{"a publish in another region does not count for this one", func(t *testing.T, w *world) fleet.Command {
			c, _ := w.command(t, "dev", time.Hour)
			if err := w.store.Claim(context.Background(), "dev", c.ID, "s0", there, w.now, c.ExpiresAt); err != nil {
				t.Fatal(err)
			}
			w.invoke(t, w.connectSince(t, "dev", true, here, "s1", t0.Add(-time.Second)))
			return c
		}, 1, fleet.CommandSent},
		{"a stale connect record (the device moved on) delivers nothing", func(t *testing.T, w *world) fleet.Command {
			c, _ := w.command(t, "dev", time.Hour)
			con := w.connect(t, "dev", true, here, "s1")
			w.connect(t, "dev", true, here, "s2")
			w.invoke(t, con)
			return c
		}, 0, fleet.CommandQueued},
		{"a heartbeat of the same session is not a connect", func(t *testing.T, w *world) fleet.Command {
			w.connect(t, "dev", true, here, "s1")
			c, _ := w.command(t, "dev", time.Hour)
			hb := w.connect(t, "dev", true, here, "s1")
			w.invoke(t, hb)
			return c
		}, 0, fleet.CommandQueued},
		{"an expired command is marked EXPIRED, not sent", func(t *testing.T, w *world) fleet.Command {
			c, _ := w.command(t, "dev", time.Minute)
			w.now = w.now.Add(2 * time.Minute)
			w.invoke(t, w.connect(t, "dev", true, here, "s1"))
			return c
		}, 0, fleet.CommandExpired},
		{"a revoked device gets nothing", func(t *testing.T, w *world) fleet.Command {
			c, _ := w.command(t, "dev", time.Hour)
			if err := w.inv.Revoke(context.Background(), fleet.Revocation{ThingName: "dev", Status: fleet.StatusRevoked, UpdatedAt: t0}); err != nil {
				t.Fatal(err)
			}
			w.invoke(t, w.connect(t, "dev", true, here, "s1"))
			return c
		}, 0, fleet.CommandQueued},
		{"an ACKED command is not delivered again", func(t *testing.T, w *world) fleet.Command {
			c, _ := w.command(t, "dev", time.Hour)
			w.invoke(t, w.connect(t, "dev", true, here, "s1"))
			ack, _ := json.Marshal(map[string]any{"thingName": "dev", "commandId": c.ID, "ts": w.now.UnixMilli(), "result": map[string]any{"ok": true}})
			if _, err := w.h.Invoke(context.Background(), ack); err != nil {
				t.Fatal(err)
			}
			w.invoke(t, w.connect(t, "dev", true, here, "s2"))
			return c
		}, 1, fleet.CommandAcked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, here)
			w.device(t, "dev", fleet.StatusActive)
			c := tt.run(t, w)
			if len(w.pub.topics) != tt.topics {
				t.Errorf("published %d times (%v), want %d", len(w.pub.topics), w.pub.topics, tt.topics)
			}
			for _, topic := range w.pub.topics {
				if topic != fleet.CommandTopic("dev", c.ID) {
					t.Errorf("published on %s", topic)
				}
			}
			if got := w.status(t, c).Effective(w.now); got != tt.wantStatus {
				t.Errorf("status %s, want %s", got, tt.wantStatus)
			}
		})
	}
}

func TestPublishFailureReleasesTheClaim(t *testing.T) {
	w := newWorld(t, "eu-west-1")
	w.device(t, "dev", fleet.StatusActive)
	w.connect(t, "dev", true, "eu-west-1", "s1")
	w.pub.fail = errors.Join(errors.New("throttled"), fleet.ErrThrottled)
	c, rec := w.command(t, "dev", time.Hour)
	resp := w.invoke(t, rec)
	if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "2" {
		t.Fatalf("batch failures %+v, want the record", resp.BatchItemFailures)
	}
	if got := w.status(t, c); got.Deliveries != 0 || got.Status != fleet.CommandQueued {
		t.Fatalf("after a failed publish: %+v, want QUEUED without delivery", got)
	}
	w.pub.fail = nil
	if resp := w.invoke(t, rec); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("retry failed: %+v", resp)
	}
	if len(w.pub.topics) != 1 {
		t.Fatalf("the retry published %d times, want 1", len(w.pub.topics))
	}
}

func TestAck(t *testing.T) {
	w := newWorld(t, "eu-west-1")
	w.device(t, "dev", fleet.StatusActive)
	c, _ := w.command(t, "dev", time.Minute)
	tests := []struct {
		name    string
		payload string
		metric  string
	}{
		{"malformed", `{"thingName":"dev"`, "Rejected"},
		{"unknown command", `{"thingName":"dev","commandId":"0000000000000-none","ts":1777000000000}`, "Rejected"},
		{"late ack", `{"thingName":"dev","commandId":"` + c.ID + `","ts":` + jsonNum(c.ExpiresAt.UnixMilli()) + `}`, "Rejected"},
		{"ack", `{"thingName":"dev","commandId":"` + c.ID + `","ts":` + jsonNum(t0.UnixMilli()+1) + `,"result":"done"}`, "Acked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := total(w.metrics, tt.metric)
			if _, err := w.h.Invoke(context.Background(), []byte(tt.payload)); err != nil {
				t.Fatalf("Invoke = %v", err)
			}
			if total(w.metrics, tt.metric) != before+1 {
				t.Errorf("%s not counted", tt.metric)
			}
		})
	}
	if got := w.status(t, c); got.Status != fleet.CommandAcked || got.Result != `"done"` {
		t.Fatalf("after ack: %+v", got)
	}
}

func total(r *obs.Recorder, name string) float64 {
	n := 0.0
	for k, v := range r.Snapshot() {
		if k == name || strings.HasPrefix(k, name+"{") {
			n += v
		}
	}
	return n
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestFixtures: the events/ fixtures of the commands function go through
// Invoke: the commands stream INSERT and the presence connect deliver, the
// ack acknowledges.
func TestFixtures(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "events", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	w := newWorld(t, "eu-west-1")
	w.device(t, "test_001", fleet.StatusActive)
	// The stored state the fixtures refer to.
	var ev events.DynamoDBEvent
	if err := json.Unmarshal(read("commands-stream-insert.json"), &ev); err != nil {
		t.Fatal(err)
	}
	item, err := ddbitem.FromStreamImage(ev.Records[0].Change.NewImage)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := ddbitem.UnmarshalCommand(item)
	if err != nil {
		t.Fatal(err)
	}
	w.now = cmd.CreatedAt
	if err := w.store.Create(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	var pev events.DynamoDBEvent
	if err := json.Unmarshal(read("commands-presence-connected.json"), &pev); err != nil {
		t.Fatal(err)
	}
	pitem, _ := ddbitem.FromStreamImage(pev.Records[0].Change.NewImage)
	if err := w.presence.PutItem(context.Background(), pitem, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"commands-stream-insert.json", "commands-presence-connected.json"} {
		out, err := w.h.Invoke(context.Background(), read(f))
		if err != nil || string(out) != `{"batchItemFailures":null}` {
			t.Fatalf("%s: %s %v", f, out, err)
		}
	}
	if len(w.pub.topics) != 1 || w.pub.topics[0] != fleet.CommandTopic("test_001", cmd.ID) {
		t.Fatalf("published %v, want one delivery of %s", w.pub.topics, cmd.ID)
	}
	ack, err := fleet.ParseAckEvent(read("commands-ack.json"))
	if err != nil || ack.CommandID != cmd.ID {
		t.Fatalf("commands-ack.json: %+v %v: want an ack of %s", ack, err, cmd.ID)
	}
	if _, err := w.h.Invoke(context.Background(), read("commands-ack.json")); err != nil {
		t.Fatal(err)
	}
	if got := w.status(t, cmd); got.Status != fleet.CommandAcked {
		t.Fatalf("after the ack fixture: %s", got.Status)
	}
}
