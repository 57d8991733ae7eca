package local

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/rules"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/workflow/api"
	"github.com/mriot/mriot/internal/workflow/commands"
)

// CommandsTable is the commands global table, and AckRuleSQL the ack rule
// of template.yaml.
const (
	CommandsTable = "mriot-commands"
	AckRuleSQL    = "SELECT topic(2) AS thingName, topic(4) AS commandId, timestamp() AS ts, result FROM 'i/+/ack/+'"
	// StreamAttempts is how often a stream batch is tried before it goes to
	// the on-failure destination (the event source mappings'
	// MaximumRetryAttempts is 10: the first try and 10 retries).
	StreamAttempts = 11
	// StreamPollDelay is how long a stream record waits before its batch
	// is invoked: Lambda polls a DynamoDB stream shard four times per
	// second, so a record reaches the function a few hundred milliseconds
	// after its write. A device subscribes to its commands right after its
	// CONNACK, well within that.
	StreamPollDelay = 250 * time.Millisecond
)

// newCommandsTable is the commands global table: a replica per region with
// its stream (NEW_AND_OLD_IMAGES), replicated last writer wins.
func newCommandsTable(cfg Config) *memddb.GlobalTable {
	return memddb.NewGlobalTable(CommandsTable, memddb.CommandsKey, cfg.Regions,
		memddb.WithReplicationLag(cfg.ReplicationLag), memddb.WithStreamView(memddb.ViewNewAndOldImages),
		memddb.WithAccount(AccountID), memddb.WithDurableStream())
}

// brokerPublisher is the IoT data plane's Publish in one region: the
// region's broker delivers to the sessions connected there.
type brokerPublisher struct{ r *Region }

func (p brokerPublisher) Publish(_ context.Context, topic string, payload []byte, qos int) error {
	if p.r.Down() || p.r.Broker == nil {
		return errRegionDown(p.r.Name)
	}
	if _, err := p.r.Broker.Deliver(topic, payload, byte(qos)); err != nil {
		return fmt.Errorf("publish %s in %s: %w: %w", topic, p.r.Name, fleet.ErrUnavailable, err)
	}
	return nil
}

// streamFunction is a stream event source mapping's view of the function:
// a batch that reports failed records is an error, so that the invoker
// retries it (as the mapping retries from the first failed record).
type streamFunction struct {
	h     *commands.Handler
	delay time.Duration
}

func (f streamFunction) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out, err := f.h.Invoke(ctx, payload)
	if err != nil {
		return out, err
	}
	var resp events.DynamoDBEventResponse
	if json.Unmarshal(out, &resp) == nil && len(resp.BatchItemFailures) > 0 {
		return out, fmt.Errorf("%d records failed: %w", len(resp.BatchItemFailures), fleet.ErrUnavailable)
	}
	return out, nil
}

// startCommands binds the region's commands function: the ack rule, and
// the two event source mappings with their filters (INSERTs of command
// items on the commands stream; presence items with Connected=true on the
// presence stream), one record per batch.
func (s *Stack) startCommands(r *Region, newInvoker func(fn string, h Function, attempts int) *Invoker) error {
	h, err := commands.New(commands.Config{Store: r.Commands, Presence: r.Presence, Devices: r.Inventory,
		Publisher: brokerPublisher{r}, Region: r.Name,
		Log: r.log.With("function", commands.Function), Metrics: s.metrics, Tracer: obs.NopTracer{}})
	if err != nil {
		return err
	}
	r.commands = newInvoker(commands.Function, h, s.cfg.AsyncAttempts)
	r.commandStreams = newInvoker(commands.Function+"-streams", streamFunction{h: h, delay: StreamPollDelay}, StreamAttempts)
	r.rules = append(r.rules, boundRule{name: "ack", rule: rules.MustParse(AckRuleSQL), target: r.commands})
	batch := func(rec events.DynamoDBEventRecord) {
		b, err := json.Marshal(events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{rec}})
		if err != nil {
			r.log.Error("commands: encode stream record", "error", err.Error())
			return
		}
		r.commandStreams.InvokeAsync(b)
	}
	unCmd := s.commands.Replica(r.Name).Subscribe(func(rec events.DynamoDBEventRecord) {
		kind := rec.Change.NewImage[ddbitem.AttrKind]
		if rec.EventName == "INSERT" && kind.DataType() == events.DataTypeString && kind.String() == ddbitem.KindCommand {
			batch(rec)
		}
	})
	unPres := s.presence.Replica(r.Name).Subscribe(func(rec events.DynamoDBEventRecord) {
		c := rec.Change.NewImage[ddbitem.AttrConnected]
		if c.DataType() == events.DataTypeBoolean && c.Boolean() {
			batch(rec)
		}
	})
	r.unsubscribeCommands = func() { unCmd(); unPres() }
	return nil
}

// apiCommands is the API's commands table: the replica of apiRegion.
type apiCommands struct{ s *Stack }

var _ api.Commands = apiCommands{}

func (a apiCommands) replica() (*memddb.Commands, error) {
	r, err := a.s.apiRegion()
	if err != nil {
		return nil, err
	}
	return r.Commands, nil
}

func (a apiCommands) Create(ctx context.Context, c fleet.Command) error {
	t, err := a.replica()
	if err != nil {
		return err
	}
	return t.Create(ctx, c)
}

func (a apiCommands) Get(ctx context.Context, thing, id string) (fleet.Command, error) {
	t, err := a.replica()
	if err != nil {
		return fleet.Command{}, err
	}
	return t.Get(ctx, thing, id)
}

func (a apiCommands) Page(ctx context.Context, thing string, limit int, cursor string) ([]fleet.Command, string, error) {
	t, err := a.replica()
	if err != nil {
		return nil, "", err
	}
	return t.Page(ctx, thing, limit, cursor)
}
