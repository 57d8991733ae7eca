// Package setup is the CloudFormation custom resource that does, in every
// region's stack, what the reference article does by hand with the CLI:
//
//   - it checks that the stack's region is one of the deployment's Regions;
//   - it enables the AWS IoT event configurations the JITR rule needs
//     (CERTIFICATE, CA_CERTIFICATE), leaving the others as they are;
//   - it waits until this region's replica of the device inventory global
//     table exists and returns its stream ARN (DescribeTable in the stack's
//     own region: no ARN is ever copied between stacks);
//   - it returns the region's iot:Data-ATS endpoint, the target of the
//     custom domain's latency record.
//
// Delete changes nothing: event configurations are account-wide settings
// that other stacks may rely on (docs/deploy.md, tear-down).
package setup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Output attribute names (Fn::GetAtt Setup.<name>).
const (
	AttrInventoryStreamArn = "InventoryStreamArn"
	AttrDataEndpoint       = "DataEndpoint"
	// AttrPresenceStreamArn is this region's presence replica stream, when
	// the PresenceTableName property is given.
	AttrPresenceStreamArn = "PresenceStreamArn"
	// AttrCommandsStreamArn is this region's commands replica stream, when
	// the CommandsTableName property is given.
	AttrCommandsStreamArn = "CommandsStreamArn"
)

// IoT is what setup needs of the region's AWS IoT control plane.
type IoT interface {
	DescribeEventConfigurations(ctx context.Context, in *iot.DescribeEventConfigurationsInput, opts ...func(*iot.Options)) (*iot.DescribeEventConfigurationsOutput, error)
	UpdateEventConfigurations(ctx context.Context, in *iot.UpdateEventConfigurationsInput, opts ...func(*iot.Options)) (*iot.UpdateEventConfigurationsOutput, error)
	DescribeEndpoint(ctx context.Context, in *iot.DescribeEndpointInput, opts ...func(*iot.Options)) (*iot.DescribeEndpointOutput, error)
}

// Tables is what setup needs of the region's DynamoDB.
type Tables interface {
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
}

var (
	_ IoT    = (*iot.Client)(nil)
	_ Tables = (*dynamodb.Client)(nil)
)

// Properties are the custom resource's properties.
type Properties struct {
	InventoryTableName string
	// PresenceTableName is optional: with it, Setup also waits for this
	// region's presence replica and returns its stream ARN.
	PresenceTableName string
	// CommandsTableName is optional: with it, Setup also waits for this
	// region's commands replica and returns its stream ARN.
	CommandsTableName string
	Regions           []string
	EventTypes        []iottypes.EventType
}

// ParseProperties reads and checks the resource properties CloudFormation
// sends (every value arrives as a string or a list of strings). The error
// wraps fleet.ErrInvalid.
func ParseProperties(m map[string]any) (Properties, error) {
	var p Properties
	name, ok := m["InventoryTableName"].(string)
	if !ok || strings.TrimSpace(name) == "" {
		return p, fmt.Errorf("property InventoryTableName: want a table name, got %v: %w", m["InventoryTableName"], fleet.ErrInvalid)
	}
	p.InventoryTableName = strings.TrimSpace(name)
	if v, ok := m["PresenceTableName"]; ok {
		name, ok := v.(string)
		if !ok || strings.TrimSpace(name) == "" {
			return p, fmt.Errorf("property PresenceTableName: want a table name, got %v: %w", v, fleet.ErrInvalid)
		}
		p.PresenceTableName = strings.TrimSpace(name)
	}
	if v, ok := m["CommandsTableName"]; ok {
		name, ok := v.(string)
		if !ok || strings.TrimSpace(name) == "" {
			return p, fmt.Errorf("property CommandsTableName: want a table name, got %v: %w", v, fleet.ErrInvalid)
		}
		p.CommandsTableName = strings.TrimSpace(name)
	}
	regions, err := stringList(m["Regions"])
	if err != nil || len(regions) == 0 {
		return p, fmt.Errorf("property Regions: want a non-empty list of regions, got %v: %w", m["Regions"], fleet.ErrInvalid)
	}
	p.Regions = regions
	types, err := stringList(m["EventTypes"])
	if err != nil {
		return p, fmt.Errorf("property EventTypes: %w: %w", err, fleet.ErrInvalid)
	}
	known := iottypes.EventType("").Values()
	for _, t := range types {
		et := iottypes.EventType(t)
		if !slices.Contains(known, et) {
			return p, fmt.Errorf("property EventTypes: unknown event type %q: %w", t, fleet.ErrInvalid)
		}
		p.EventTypes = append(p.EventTypes, et)
	}
	return p, nil
}

// stringList accepts a list of strings or one comma-separated string.
func stringList(v any) ([]string, error) {
	var raw []string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		raw = strings.Split(x, ",")
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("list item %v is not a string", e)
			}
			raw = append(raw, s)
		}
	case []string:
		raw = x
	default:
		return nil, fmt.Errorf("want a list of strings, got %T", v)
	}
	var out []string
	for _, s := range raw {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// Handler handles the custom resource's requests.
type Handler struct {
	IoT    IoT
	Tables Tables
	Region string
	Log    *slog.Logger // discarded when nil
	// StreamWait bounds the wait for the inventory replica and its stream
	// (default 8 minutes; the function's timeout is 10).
	StreamWait time.Duration
	// Poll is the interval between DescribeTable calls (default 5s).
	Poll time.Duration
}

func (h *Handler) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// Handle is a cfn.CustomResourceFunction: wrap it with cfn.LambdaWrap.
func (h *Handler) Handle(ctx context.Context, ev cfn.Event) (string, map[string]any, error) {
	log := h.log().With("request_type", string(ev.RequestType), "logical_id", ev.LogicalResourceID)
	if ev.RequestType == cfn.RequestDelete {
		// Nothing to undo: see the package documentation. A failed create
		// also ends here, with the request id as physical id.
		log.Info("delete: event configurations are left as they are", "physical_id", ev.PhysicalResourceID)
		return ev.PhysicalResourceID, nil, nil
	}
	p, err := ParseProperties(ev.ResourceProperties)
	if err != nil {
		log.Error("bad resource properties", "error", err)
		return "", nil, err
	}
	physicalID := "mriot-setup-" + h.Region + "-" + p.InventoryTableName
	if !slices.Contains(p.Regions, h.Region) {
		err := fmt.Errorf("this stack's region %s is not in Regions %v: add it to the Regions parameter of every region's config and redeploy the primary (%s) first: %w",
			h.Region, p.Regions, p.Regions[0], fleet.ErrInvalid)
		log.Error("region not in the deployment", "error", err)
		return physicalID, nil, err
	}
	if err := h.enableEvents(ctx, p.EventTypes, log); err != nil {
		return physicalID, nil, err
	}
	stream, err := h.waitForStream(ctx, p.InventoryTableName, p.Regions[0], log)
	if err != nil {
		return physicalID, nil, err
	}
	ep, err := h.IoT.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: aws.String("iot:Data-ATS")})
	if err != nil {
		return physicalID, nil, fmt.Errorf("describe iot:Data-ATS endpoint in %s: %w", h.Region, err)
	}
	data := map[string]any{
		AttrInventoryStreamArn: stream,
		AttrDataEndpoint:       aws.ToString(ep.EndpointAddress),
	}
	if p.PresenceTableName != "" {
		presence, err := h.waitForStream(ctx, p.PresenceTableName, p.Regions[0], log)
		if err != nil {
			return physicalID, nil, err
		}
		data[AttrPresenceStreamArn] = presence
	}
	if p.CommandsTableName != "" {
		cmds, err := h.waitForStream(ctx, p.CommandsTableName, p.Regions[0], log)
		if err != nil {
			return physicalID, nil, err
		}
		data[AttrCommandsStreamArn] = cmds
	}
	log.Info("setup done", "inventory_stream_arn", stream, "data_endpoint", data[AttrDataEndpoint])
	return physicalID, data, nil
}

// enableEvents turns on the given event types that are off.
func (h *Handler) enableEvents(ctx context.Context, want []iottypes.EventType, log *slog.Logger) error {
	if len(want) == 0 {
		return nil
	}
	cur, err := h.IoT.DescribeEventConfigurations(ctx, &iot.DescribeEventConfigurationsInput{})
	if err != nil {
		return fmt.Errorf("describe IoT event configurations in %s: %w", h.Region, err)
	}
	update := map[string]iottypes.Configuration{}
	for _, t := range want {
		if c, ok := cur.EventConfigurations[string(t)]; ok && c.Enabled {
			continue
		}
		update[string(t)] = iottypes.Configuration{Enabled: true}
	}
	if len(update) == 0 {
		log.Info("IoT event configurations already enabled", "event_types", want)
		return nil
	}
	if _, err := h.IoT.UpdateEventConfigurations(ctx, &iot.UpdateEventConfigurationsInput{EventConfigurations: update}); err != nil {
		return fmt.Errorf("enable IoT event configurations %v in %s: %w", keys(update), h.Region, err)
	}
	log.Info("IoT event configurations enabled", "event_types", keys(update))
	return nil
}

func keys(m map[string]iottypes.Configuration) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// waitForStream returns the stream ARN of the table's replica in this region
// once the table is ACTIVE with a stream, polling until StreamWait is spent.
func (h *Handler) waitForStream(ctx context.Context, table, primary string, log *slog.Logger) (string, error) {
	wait, poll := h.StreamWait, h.Poll
	if wait <= 0 {
		wait = 8 * time.Minute
	}
	if poll <= 0 {
		poll = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var last string
	for {
		out, err := h.Tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		var nf *ddbtypes.ResourceNotFoundException
		switch {
		case errors.As(err, &nf):
			last = "the table has no replica in this region yet (deploy the primary region " + primary + " first, with this region in Regions)"
		case err != nil:
			if ctx.Err() == nil {
				return "", fmt.Errorf("describe table %s in %s: %w", table, h.Region, err)
			}
		case out.Table == nil:
			last = "DescribeTable returned no table"
		case out.Table.TableStatus != ddbtypes.TableStatusActive:
			last = "the replica is " + string(out.Table.TableStatus)
		case aws.ToString(out.Table.LatestStreamArn) == "":
			last = "the replica has no stream"
		default:
			return aws.ToString(out.Table.LatestStreamArn), nil
		}
		log.Info("waiting for the table replica", "table", table, "state", last)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("table %s in %s not ready after %v: %s: %w", table, h.Region, wait, last, fleet.ErrUnavailable)
		case <-time.After(poll):
		}
	}
}
