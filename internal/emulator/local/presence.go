package local

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/rules"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/workflow/presence"
)

// PresenceRuleSQL is the presence rule of template.yaml: every lifecycle
// event of the region, as is.
const PresenceRuleSQL = "SELECT * FROM '$aws/events/presence/+/+'"

// newPresenceTable is the presence global table: a replica per region with
// its stream (NEW_AND_OLD_IMAGES, as template.yaml declares it), the sparse
// ConnectedIndex, replicated last writer wins after the replication lag.
func newPresenceTable(cfg Config) *memddb.GlobalTable {
	return memddb.NewGlobalTable(PresenceTable, memddb.PresenceKey, cfg.Regions,
		memddb.WithReplicationLag(cfg.ReplicationLag), memddb.WithStreamView(memddb.ViewNewAndOldImages),
		memddb.WithAccount(AccountID), memddb.PresenceIndexes, memddb.WithDurableStream())
}

// startPresence binds the region's presence function as template.yaml
// does: to the presence rule (the broker's lifecycle events, invoked
// asynchronously like jitr and ingest), and to the region's replica stream
// of the presence table (the event source mapping: a batch of one record
// here). Clients that are no device of the inventory get no presence.
func (s *Stack) startPresence(r *Region, newInvoker func(fn string, h Function, attempts int) *Invoker) error {
	h, err := presence.New(presence.Config{Store: r.Presence, Devices: r.Inventory, Region: r.Name, Regions: s.cfg.Regions,
		Log: r.log.With("function", presence.Function), Metrics: s.metrics, Tracer: obs.NopTracer{}})
	if err != nil {
		return err
	}
	r.presence = newInvoker(presence.Function, h, s.cfg.AsyncAttempts)
	r.rules = append(r.rules, boundRule{name: "presence", rule: rules.MustParse(PresenceRuleSQL), target: r.presence})
	r.unsubscribePresence = r.Presence.Table().Subscribe(func(rec events.DynamoDBEventRecord) {
		payload, err := json.Marshal(events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{rec}})
		if err != nil {
			r.log.Error("presence stream: encode record", "error", err.Error())
			return
		}
		r.presence.InvokeAsync(payload)
	})
	return nil
}

// apiPresence is the presence table as the API reads it: the primary
// region's replica, or the first region's that is up (apiRegion).
type apiPresence struct{ s *Stack }

func (a apiPresence) Get(ctx context.Context, thing string) (fleet.Presence, error) {
	r, err := a.s.apiRegion()
	if err != nil {
		return fleet.Presence{}, err
	}
	return r.Presence.Get(ctx, thing)
}

func (a apiPresence) Connected(ctx context.Context, limit int, cursor string) ([]fleet.Presence, string, error) {
	r, err := a.s.apiRegion()
	if err != nil {
		return nil, "", err
	}
	return r.Presence.Connected(ctx, limit, cursor)
}
