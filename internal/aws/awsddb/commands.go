package awsddb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Commands is the commands table on one region's replica.
type Commands struct{ common }

var _ contract.Commands = (*Commands)(nil)

// NewCommands returns the commands adapter over table.
func NewCommands(client Client, table string) *Commands {
	return &Commands{common{client: client, table: table}}
}

func checkCommandKey(what, thing, id string) error {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := fleet.ValidateCommandID(id); err != nil {
		return fmt.Errorf("%s of %s: %w", what, thing, err)
	}
	return nil
}

// conditional runs a conditional write: a failed condition is
// ErrConditionFailed, or ErrNotFound when the item is absent (read back
// with ReturnValuesOnConditionCheckFailure).
func (c *Commands) conditional(err error, format string, args ...any) error {
	var ccfe *types.ConditionalCheckFailedException
	if errors.As(err, &ccfe) {
		if len(ccfe.Item) == 0 {
			return fmt.Errorf(format+": %w: %w", append(args, fleet.ErrNotFound, err)...)
		}
		return fmt.Errorf(format+": %w: %w", append(args, fleet.ErrConditionFailed, err)...)
	}
	return c.wrap(err, format, args...)
}

// Create implements contract.Commands: attribute_not_exists(SK).
func (c *Commands) Create(ctx context.Context, cmd fleet.Command) error {
	item, err := ddbitem.MarshalCommand(cmd)
	if err != nil {
		return fmt.Errorf("create command: %w", err)
	}
	return c.putNew(ctx, item, "create command %s/%s", cmd.ThingName, cmd.ID)
}

// putNew puts item only where no item has its key (ErrAlreadyExists).
func (c *Commands) putNew(ctx context.Context, item map[string]types.AttributeValue, format string, args ...any) error {
	expr, err := expression.NewBuilder().WithCondition(expression.AttributeNotExists(expression.Name(ddbitem.AttrSK))).Build()
	if err != nil {
		return fmt.Errorf(format+": build condition: %w", append(args, err)...)
	}
	_, err = c.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(c.table),
		Item:                      item,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	var ccfe *types.ConditionalCheckFailedException
	if errors.As(err, &ccfe) {
		return fmt.Errorf(format+": %w: %w", append(args, fleet.ErrAlreadyExists, err)...)
	}
	return c.wrap(err, format, args...)
}

// query reads thing's items with key condition more (nil: the whole
// partition), strongly consistent, every page, newest first.
func (c *Commands) query(ctx context.Context, thing string, more func(expression.KeyConditionBuilder) expression.KeyConditionBuilder, stop func(items []map[string]types.AttributeValue) bool) ([]map[string]types.AttributeValue, bool, error) {
	key := expression.Key(ddbitem.CommandsHashKey).Equal(expression.Value(thing))
	if more != nil {
		key = more(key)
	}
	expr, err := expression.NewBuilder().WithKeyCondition(key).Build()
	if err != nil {
		return nil, false, fmt.Errorf("build key condition: %w", err)
	}
	var items []map[string]types.AttributeValue
	var start map[string]types.AttributeValue
	for {
		out, err := c.client.Query(ctx, &dynamodb.QueryInput{
			TableName:                 aws.String(c.table),
			KeyConditionExpression:    expr.KeyCondition(),
			ExpressionAttributeNames:  expr.Names(),
			ExpressionAttributeValues: expr.Values(),
			ScanIndexForward:          aws.Bool(false),
			ConsistentRead:            aws.Bool(true),
			ExclusiveStartKey:         start,
		})
		if err != nil {
			return nil, false, c.wrap(err, "query commands of %s", thing)
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items, false, nil
		}
		if stop != nil && stop(items) {
			return items, true, nil
		}
		start = out.LastEvaluatedKey
	}
}

// Get implements contract.Commands: the command and its records, SK
// begins_with the id.
func (c *Commands) Get(ctx context.Context, thing, id string) (fleet.Command, error) {
	if err := checkCommandKey("get command", thing, id); err != nil {
		return fleet.Command{}, err
	}
	items, _, err := c.query(ctx, thing, func(k expression.KeyConditionBuilder) expression.KeyConditionBuilder {
		return k.And(expression.Key(ddbitem.CommandsRangeKey).BeginsWith(id))
	}, nil)
	if err != nil {
		return fleet.Command{}, fmt.Errorf("get command %s/%s: %w", thing, id, err)
	}
	items = slices.DeleteFunc(items, func(it map[string]types.AttributeValue) bool {
		cid, _ := ddbitem.CommandOfKey(sOf(it, ddbitem.AttrSK))
		return cid != id
	})
	cmds, err := ddbitem.MergePartition(items)
	if err != nil {
		return fleet.Command{}, fmt.Errorf("get command %s/%s: %w", thing, id, err)
	}
	if len(cmds) == 0 {
		return fleet.Command{}, fmt.Errorf("get command %s/%s: %w", thing, id, fleet.ErrNotFound)
	}
	return cmds[0], nil
}

func sOf(item map[string]types.AttributeValue, name string) string {
	if s, ok := item[name].(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

// countCommands counts the command items among items.
func countCommands(items []map[string]types.AttributeValue) int {
	n := 0
	for _, it := range items {
		if _, kind := ddbitem.CommandOfKey(sOf(it, ddbitem.AttrSK)); kind == ddbitem.KindCommand {
			n++
		}
	}
	return n
}

// Page implements contract.Commands: a Query newest first on SK < the
// cursor's id, page after page until limit+1 commands are read (a
// command's records come before it, so every command read is complete).
func (c *Commands) Page(ctx context.Context, thing string, limit int, cursor string) ([]fleet.Command, string, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return nil, "", fmt.Errorf("page commands: %w", err)
	}
	if limit < 1 || limit >= 1<<20 {
		return nil, "", fmt.Errorf("page commands of %s: limit %d: %w", thing, limit, fleet.ErrInvalid)
	}
	below, err := ddbitem.ParseCommandCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("page commands of %s: %w", thing, err)
	}
	var more func(expression.KeyConditionBuilder) expression.KeyConditionBuilder
	if below != "" {
		more = func(k expression.KeyConditionBuilder) expression.KeyConditionBuilder {
			return k.And(expression.Key(ddbitem.CommandsRangeKey).LessThan(expression.Value(below)))
		}
	}
	items, _, err := c.query(ctx, thing, more, func(items []map[string]types.AttributeValue) bool {
		return countCommands(items) > limit
	})
	if err != nil {
		return nil, "", fmt.Errorf("page commands of %s: %w", thing, err)
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

// Open implements contract.Commands: the whole partition (its items expire
// a week after their commands).
func (c *Commands) Open(ctx context.Context, thing string) ([]fleet.Command, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return nil, fmt.Errorf("open commands: %w", err)
	}
	items, _, err := c.query(ctx, thing, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("open commands of %s: %w", thing, err)
	}
	cmds, err := ddbitem.OpenCommands(items)
	if err != nil {
		return nil, fmt.Errorf("open commands of %s: %w", thing, err)
	}
	return cmds, nil
}

// Claim implements contract.Commands: put the delivery record under
// attribute_not_exists(SK).
func (c *Commands) Claim(ctx context.Context, thing, id, session, region string, at, expires time.Time) error {
	if err := checkCommandKey("claim command", thing, id); err != nil {
		return err
	}
	if session == "" {
		return fmt.Errorf("claim command %s/%s: no session: %w", thing, id, fleet.ErrInvalid)
	}
	return c.putNew(ctx, ddbitem.MarshalDelivery(thing, id, session, region, at, expires),
		"claim command %s/%s for session %s", thing, id, session)
}

// Unclaim implements contract.Commands.
func (c *Commands) Unclaim(ctx context.Context, thing, id, session string) error {
	if err := checkCommandKey("unclaim command", thing, id); err != nil {
		return err
	}
	_, err := c.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(c.table),
		Key:       ddbitem.DeliveryKey(thing, id, session),
	})
	return c.wrap(err, "unclaim command %s/%s for session %s", thing, id, session)
}

func openStatus() expression.ConditionBuilder {
	st := expression.Name(ddbitem.AttrStatus)
	return expression.AttributeExists(expression.Name(ddbitem.AttrSK)).And(
		st.Equal(expression.Value(string(fleet.CommandQueued))).Or(st.Equal(expression.Value(string(fleet.CommandSent)))))
}

func msValue(t time.Time) expression.ValueBuilder {
	return expression.Value(t.UnixMilli())
}

// update runs a conditional UpdateItem on a command item.
func (c *Commands) update(ctx context.Context, thing, id string, cond expression.ConditionBuilder, upd expression.UpdateBuilder, format string, args ...any) error {
	expr, err := expression.NewBuilder().WithCondition(cond).WithUpdate(upd).Build()
	if err != nil {
		return fmt.Errorf(format+": build expression: %w", append(args, err)...)
	}
	_, err = c.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(c.table),
		Key:                                 ddbitem.CommandKey(thing, id),
		ConditionExpression:                 expr.Condition(),
		UpdateExpression:                    expr.Update(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	return c.conditional(err, format, args...)
}

// MarkSent implements contract.Commands: Status IN (QUEUED, SENT) AND
// ExpiresAt > :at.
func (c *Commands) MarkSent(ctx context.Context, thing, id, session, region string, at time.Time) error {
	if err := checkCommandKey("mark command sent", thing, id); err != nil {
		return err
	}
	cond := openStatus().And(expression.Name(ddbitem.AttrCmdExpires).GreaterThan(msValue(at)))
	upd := expression.Set(expression.Name(ddbitem.AttrStatus), expression.Value(string(fleet.CommandSent))).
		Set(expression.Name(ddbitem.AttrSentAt), msValue(at)).
		Set(expression.Name(ddbitem.AttrSentRegion), expression.Value(region)).
		Set(expression.Name(ddbitem.AttrSentSession), expression.Value(session)).
		Add(expression.Name(ddbitem.AttrDeliveries), expression.Value(1)).
		Add(expression.Name(ddbitem.AttrVersion), expression.Value(1))
	return c.update(ctx, thing, id, cond, upd, "mark command %s/%s sent", thing, id)
}

// Ack implements contract.Commands: read the item; refuse an ack at or
// after ExpiresAt; put the ack record where absent; set ACKED under
// Status <> ACKED.
func (c *Commands) Ack(ctx context.Context, thing, id string, at time.Time, result string) error {
	if err := checkCommandKey("ack command", thing, id); err != nil {
		return err
	}
	cmd, err := getItem(ctx, &c.common, ddbitem.CommandKey(thing, id), ddbitem.UnmarshalCommand, fmt.Sprintf("ack command %s/%s", thing, id))
	if err != nil {
		return err
	}
	if !at.Before(cmd.ExpiresAt) {
		return fmt.Errorf("ack command %s/%s: acknowledged at %s, expired at %s: %w", thing, id,
			at.UTC().Format(time.RFC3339Nano), cmd.ExpiresAt.Format(time.RFC3339Nano), fleet.ErrConditionFailed)
	}
	err = c.putNew(ctx, ddbitem.MarshalAck(thing, id, at, result, cmd.ExpiresAt), "ack command %s/%s", thing, id)
	if err != nil && !errors.Is(err, fleet.ErrAlreadyExists) {
		return err
	}
	cond := expression.AttributeExists(expression.Name(ddbitem.AttrSK)).
		And(expression.Name(ddbitem.AttrStatus).NotEqual(expression.Value(string(fleet.CommandAcked))))
	upd := expression.Set(expression.Name(ddbitem.AttrStatus), expression.Value(string(fleet.CommandAcked))).
		Set(expression.Name(ddbitem.AttrAckedAt), msValue(at)).
		Add(expression.Name(ddbitem.AttrVersion), expression.Value(1))
	if result != "" {
		upd = upd.Set(expression.Name(ddbitem.AttrResult), expression.Value(result))
	}
	err = c.update(ctx, thing, id, cond, upd, "ack command %s/%s", thing, id)
	if errors.Is(err, fleet.ErrConditionFailed) {
		return nil // ACKED already
	}
	return err
}

// Expire implements contract.Commands: Status IN (QUEUED, SENT) AND
// ExpiresAt <= :now.
func (c *Commands) Expire(ctx context.Context, thing, id string, now time.Time) error {
	if err := checkCommandKey("expire command", thing, id); err != nil {
		return err
	}
	cond := openStatus().And(expression.Name(ddbitem.AttrCmdExpires).LessThanEqual(msValue(now)))
	upd := expression.Set(expression.Name(ddbitem.AttrStatus), expression.Value(string(fleet.CommandExpired))).
		Add(expression.Name(ddbitem.AttrVersion), expression.Value(1))
	return c.update(ctx, thing, id, cond, upd, "expire command %s/%s", thing, id)
}
