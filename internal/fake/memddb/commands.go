package memddb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// CommandsKey is the key schema of the commands table.
var CommandsKey = KeySchema{HashKey: ddbitem.CommandsHashKey, RangeKey: ddbitem.CommandsRangeKey}

// Commands is the commands port on one replica.
type Commands struct{ t *Table }

var _ contract.Commands = (*Commands)(nil)

// NewCommands returns the commands port of a replica whose key schema is
// CommandsKey.
func NewCommands(t *Table) *Commands { return &Commands{t: t} }

// Table returns the replica the port works on.
func (c *Commands) Table() *Table { return c.t }

func checkCommandKey(what, thing, id string) error {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := fleet.ValidateCommandID(id); err != nil {
		return fmt.Errorf("%s of %s: %w", what, thing, err)
	}
	return nil
}

func ccf(format string, args ...any) error {
	return fmt.Errorf("ConditionalCheckFailedException: "+format+": %w", append(args, fleet.ErrConditionFailed)...)
}

// Create implements contract.Commands.
func (c *Commands) Create(ctx context.Context, cmd fleet.Command) error {
	item, err := ddbitem.MarshalCommand(cmd)
	if err != nil {
		return fmt.Errorf("create command: %w", err)
	}
	err = c.t.PutItem(ctx, item, func(old map[string]types.AttributeValue) error {
		if old != nil {
			return fmt.Errorf("ConditionalCheckFailedException: command exists: %w", fleet.ErrAlreadyExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create command %s/%s: %w", cmd.ThingName, cmd.ID, err)
	}
	return nil
}

func (c *Commands) partition(ctx context.Context, thing string) ([]map[string]types.AttributeValue, error) {
	return c.t.Query(ctx, &types.AttributeValueMemberS{Value: thing}, false, 0)
}

// Get implements contract.Commands.
func (c *Commands) Get(ctx context.Context, thing, id string) (fleet.Command, error) {
	if err := checkCommandKey("get command", thing, id); err != nil {
		return fleet.Command{}, err
	}
	items, err := c.partition(ctx, thing)
	if err != nil {
		return fleet.Command{}, fmt.Errorf("get command %s/%s: %w", thing, id, err)
	}
	var mine []map[string]types.AttributeValue
	for _, it := range items {
		if cid, _ := ddbitem.CommandOfKey(stringAttr(it, ddbitem.AttrSK)); cid == id {
			mine = append(mine, it)
		}
	}
	cmds, err := ddbitem.MergePartition(mine)
	if err != nil {
		return fleet.Command{}, fmt.Errorf("get command %s/%s: %w", thing, id, err)
	}
	if len(cmds) == 0 {
		return fleet.Command{}, fmt.Errorf("get command %s/%s: %w", thing, id, fleet.ErrNotFound)
	}
	return cmds[0], nil
}

// Page implements contract.Commands.
func (c *Commands) Page(ctx context.Context, thing string, limit int, cursor string) ([]fleet.Command, string, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return nil, "", fmt.Errorf("page commands: %w", err)
	}
	if limit < 1 {
		return nil, "", fmt.Errorf("page commands of %s: limit %d: %w", thing, limit, fleet.ErrInvalid)
	}
	below, err := ddbitem.ParseCommandCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("page commands of %s: %w", thing, err)
	}
	items, err := c.partition(ctx, thing)
	if err != nil {
		return nil, "", fmt.Errorf("page commands of %s: %w", thing, err)
	}
	if below != "" {
		items = slices.DeleteFunc(items, func(it map[string]types.AttributeValue) bool {
			return stringAttr(it, ddbitem.AttrSK) >= below
		})
	}
	cmds, err := ddbitem.MergePartition(items)
	if err != nil {
		return nil, "", fmt.Errorf("page commands of %s: %w", thing, err)
	}
	if len(cmds) > limit {
		return cmds[:limit], ddbitem.CommandCursor(cmds[limit-1].ID), nil
	}
	return cmds, "", nil
}

// Open implements contract.Commands.
func (c *Commands) Open(ctx context.Context, thing string) ([]fleet.Command, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return nil, fmt.Errorf("open commands: %w", err)
	}
	items, err := c.partition(ctx, thing)
	if err != nil {
		return nil, fmt.Errorf("open commands of %s: %w", thing, err)
	}
	cmds, err := ddbitem.OpenCommands(items)
	if err != nil {
		return nil, fmt.Errorf("open commands of %s: %w", thing, err)
	}
	return cmds, nil
}

// Claim implements contract.Commands.
func (c *Commands) Claim(ctx context.Context, thing, id, session, region string, at, expires time.Time) error {
	if err := checkCommandKey("claim command", thing, id); err != nil {
		return err
	}
	if session == "" {
		return fmt.Errorf("claim command %s/%s: no session: %w", thing, id, fleet.ErrInvalid)
	}
	err := c.t.PutItem(ctx, ddbitem.MarshalDelivery(thing, id, session, region, at, expires), func(old map[string]types.AttributeValue) error {
		if old != nil {
			return fmt.Errorf("ConditionalCheckFailedException: delivered to session %s already: %w", session, fleet.ErrAlreadyExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("claim command %s/%s for session %s: %w", thing, id, session, err)
	}
	return nil
}

// Unclaim implements contract.Commands.
func (c *Commands) Unclaim(ctx context.Context, thing, id, session string) error {
	if err := checkCommandKey("unclaim command", thing, id); err != nil {
		return err
	}
	if err := c.t.DeleteItem(ctx, ddbitem.DeliveryKey(thing, id, session), nil); err != nil {
		return fmt.Errorf("unclaim command %s/%s for session %s: %w", thing, id, session, err)
	}
	return nil
}

func commandItemTimes(old map[string]types.AttributeValue) (fleet.CommandStatus, int64) {
	exp, _ := strconv.ParseInt(numberAttr(old, ddbitem.AttrCmdExpires), 10, 64)
	return fleet.CommandStatus(stringAttr(old, ddbitem.AttrStatus)), exp
}

func addN(item map[string]types.AttributeValue, name string, d int64) {
	n, _ := strconv.ParseInt(numberAttr(item, name), 10, 64)
	item[name] = &types.AttributeValueMemberN{Value: strconv.FormatInt(n+d, 10)}
}

// MarkSent implements contract.Commands.
func (c *Commands) MarkSent(ctx context.Context, thing, id, session, region string, at time.Time) error {
	if err := checkCommandKey("mark command sent", thing, id); err != nil {
		return err
	}
	err := c.t.UpdateItem(ctx, ddbitem.CommandKey(thing, id), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if old == nil {
			return nil, fmt.Errorf("ConditionalCheckFailedException: no command: %w", fleet.ErrNotFound)
		}
		st, exp := commandItemTimes(old)
		if st != fleet.CommandQueued && st != fleet.CommandSent {
			return nil, ccf("status is %s", st)
		}
		if exp <= at.UnixMilli() {
			return nil, ccf("expired at %d", exp)
		}
		old[ddbitem.AttrStatus] = &types.AttributeValueMemberS{Value: string(fleet.CommandSent)}
		old[ddbitem.AttrSentAt] = ddbitem.MS(at)
		old[ddbitem.AttrSentRegion] = &types.AttributeValueMemberS{Value: region}
		old[ddbitem.AttrSentSession] = &types.AttributeValueMemberS{Value: session}
		addN(old, ddbitem.AttrDeliveries, 1)
		addN(old, ddbitem.AttrVersion, 1)
		return old, nil
	})
	if err != nil {
		return fmt.Errorf("mark command %s/%s sent: %w", thing, id, err)
	}
	return nil
}

// Ack implements contract.Commands.
func (c *Commands) Ack(ctx context.Context, thing, id string, at time.Time, result string) error {
	if err := checkCommandKey("ack command", thing, id); err != nil {
		return err
	}
	item, err := c.t.GetItem(ctx, ddbitem.CommandKey(thing, id))
	if err != nil {
		return fmt.Errorf("ack command %s/%s: %w", thing, id, err)
	}
	if item == nil {
		return fmt.Errorf("ack command %s/%s: %w", thing, id, fleet.ErrNotFound)
	}
	_, exp := commandItemTimes(item)
	if at.UnixMilli() >= exp {
		return fmt.Errorf("ack command %s/%s: %w", thing, id, ccf("acknowledged at %d, expired at %d", at.UnixMilli(), exp))
	}
	expires := time.UnixMilli(exp)
	err = c.t.PutItem(ctx, ddbitem.MarshalAck(thing, id, at, result, expires), func(old map[string]types.AttributeValue) error {
		if old != nil {
			return errKeep
		}
		return nil
	})
	if err != nil && !errors.Is(err, errKeep) {
		return fmt.Errorf("ack command %s/%s: %w", thing, id, err)
	}
	err = c.t.UpdateItem(ctx, ddbitem.CommandKey(thing, id), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if old == nil {
			return nil, fmt.Errorf("ConditionalCheckFailedException: no command: %w", fleet.ErrNotFound)
		}
		if st, _ := commandItemTimes(old); st == fleet.CommandAcked {
			return nil, errKeep
		}
		old[ddbitem.AttrStatus] = &types.AttributeValueMemberS{Value: string(fleet.CommandAcked)}
		old[ddbitem.AttrAckedAt] = ddbitem.MS(at)
		if result != "" {
			old[ddbitem.AttrResult] = &types.AttributeValueMemberS{Value: result}
		}
		addN(old, ddbitem.AttrVersion, 1)
		return old, nil
	})
	if err != nil && !errors.Is(err, errKeep) {
		return fmt.Errorf("ack command %s/%s: %w", thing, id, err)
	}
	return nil
}

// errKeep refuses a write that would change nothing that matters.
var errKeep = fmt.Errorf("ConditionalCheckFailedException: kept: %w", fleet.ErrConditionFailed)

// Expire implements contract.Commands.
func (c *Commands) Expire(ctx context.Context, thing, id string, now time.Time) error {
	if err := checkCommandKey("expire command", thing, id); err != nil {
		return err
	}
	err := c.t.UpdateItem(ctx, ddbitem.CommandKey(thing, id), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if old == nil {
			return nil, fmt.Errorf("ConditionalCheckFailedException: no command: %w", fleet.ErrNotFound)
		}
		st, exp := commandItemTimes(old)
		if st != fleet.CommandQueued && st != fleet.CommandSent {
			return nil, ccf("status is %s", st)
		}
		if exp > now.UnixMilli() {
			return nil, ccf("expires at %d, after %d", exp, now.UnixMilli())
		}
		old[ddbitem.AttrStatus] = &types.AttributeValueMemberS{Value: string(fleet.CommandExpired)}
		addN(old, ddbitem.AttrVersion, 1)
		return old, nil
	})
	if err != nil {
		return fmt.Errorf("expire command %s/%s: %w", thing, id, err)
	}
	return nil
}
