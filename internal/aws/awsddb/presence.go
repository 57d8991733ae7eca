package awsddb

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Presence is the presence table (contract.Presence) on one region's replica.
type Presence struct{ common }

// NewPresence returns the presence adapter over table.
func NewPresence(client Client, table string) *Presence {
	return &Presence{common{client: client, table: table}}
}

// Record implements contract.Presence. fleet.ApplySession has three ways to
// change a record; each is one conditional UpdateItem, tried in turn:
//
//	a newer connection:             attribute_not_exists(Version) OR Version < :v
//	the stored connection's end:    Version = :v AND Phase < :p  (keeps Started)
//	its connect, late:              Version = :v AND Phase > :p AND Started > :st (moves Started)
//
// When none applies, a strongly consistent read tells whether the event is
// stale (nothing to do) or a concurrent write of the region's moved the
// record between two tries (try again).
func (p *Presence) Record(ctx context.Context, ev fleet.SessionRecord) (fleet.SessionRecord, bool, error) {
	if _, err := ddbitem.MarshalSession(ev); err != nil {
		return fleet.SessionRecord{}, false, fmt.Errorf("record session: %w", err)
	}
	key := ddbitem.SessionKey(ev.ThingName, ev.Region)
	what := fmt.Sprintf("record session of %s in %s", ev.ThingName, ev.Region)
	num := func(n int64) types.AttributeValue {
		return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
	}
	vals := map[string]types.AttributeValue{
		":r": &types.AttributeValueMemberS{Value: ev.Region}, ":s": &types.AttributeValueMemberS{Value: ev.SessionID},
		":c": &types.AttributeValueMemberBOOL{Value: ev.Connected}, ":st": num(ev.Started.UnixMilli()),
		":at": num(ev.EventAt.UnixMilli()), ":v": num(ev.Version), ":p": num(int64(ddbitem.Phase(ev.Connected))),
		":one": num(1),
	}
	type try struct{ update, cond string }
	tries := []try{{
		update: "SET #Region = :r, #SessionId = :s, #Connected = :c, #Started = :st, #EventAt = :at, #Version = :v, #Phase = :p ADD #Seq :one",
		cond:   "attribute_not_exists(#Version) OR #Version < :v",
	}}
	if ev.Connected {
		tries = append(tries, try{update: "SET #Started = :st ADD #Seq :one", cond: "#Version = :v AND #Phase > :p AND #Started > :st"})
	} else {
		tries = append(tries, try{update: "SET #SessionId = :s, #Connected = :c, #EventAt = :at, #Phase = :p ADD #Seq :one", cond: "#Version = :v AND #Phase < :p"})
	}
	for range 4 {
		for _, t := range tries {
			in := &dynamodb.UpdateItemInput{TableName: aws.String(p.table), Key: key, UpdateExpression: aws.String(t.update),
				ConditionExpression: aws.String(t.cond), ExpressionAttributeValues: usedValues(vals, t.update+" "+t.cond),
				ExpressionAttributeNames: usedNames(t.update + " " + t.cond),
				ReturnValues:             types.ReturnValueAllNew}
			out, err := p.client.UpdateItem(ctx, in)
			if err == nil {
				r, err := ddbitem.UnmarshalSession(out.Attributes)
				if err != nil {
					return fleet.SessionRecord{}, false, fmt.Errorf("%s: %w", what, err)
				}
				return r, true, nil
			}
			if !errors.Is(Sentinel(err), fleet.ErrConditionFailed) {
				return fleet.SessionRecord{}, false, p.wrap(err, "%s", what)
			}
		}
		stored, err := getItem(ctx, &p.common, key, ddbitem.UnmarshalSession, what)
		if err != nil {
			return fleet.SessionRecord{}, false, err
		}
		if _, changes := fleet.ApplySession(&stored, ev); !changes {
			return stored, false, nil
		}
	}
	return fleet.SessionRecord{}, false, fmt.Errorf("%s: the record kept moving: %w", what, fleet.ErrBusy)
}

// usedValues keeps the placeholders expr names (DynamoDB refuses unused ones).
func usedValues(vals map[string]types.AttributeValue, expr string) map[string]types.AttributeValue {
	out := map[string]types.AttributeValue{}
	for k, v := range vals {
		if containsToken(expr, k) {
			out[k] = v
		}
	}
	return out
}

// usedNames maps the #Name placeholders expr uses onto the attribute names.
func usedNames(expr string) map[string]string {
	out := map[string]string{}
	for _, name := range []string{ddbitem.AttrRegion, ddbitem.AttrSessionID, ddbitem.AttrConnected, ddbitem.AttrStarted,
		ddbitem.AttrEventAt, ddbitem.AttrVersion, ddbitem.AttrPhase, ddbitem.AttrSeq} {
		if containsToken(expr, "#"+name) {
			out["#"+name] = name
		}
	}
	return out
}

// containsToken reports whether tok occurs in s not followed by a name byte.
func containsToken(s, tok string) bool {
	for i := 0; i+len(tok) <= len(s); i++ {
		if s[i:i+len(tok)] != tok {
			continue
		}
		if j := i + len(tok); j == len(s) || !(s[j] == '_' || 'a' <= s[j] && s[j] <= 'z' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
			return true
		}
	}
	return false
}

// Sessions implements contract.Presence.
func (p *Presence) Sessions(ctx context.Context, thing string, regions []string) ([]fleet.SessionRecord, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return nil, fmt.Errorf("read session records: %w", err)
	}
	var out []fleet.SessionRecord
	for _, region := range regions {
		if region == "" {
			return nil, fmt.Errorf("read session records of %s: empty region: %w", thing, fleet.ErrInvalid)
		}
		r, err := getItem(ctx, &p.common, ddbitem.SessionKey(thing, region), ddbitem.UnmarshalSession,
			fmt.Sprintf("read session record of %s in %s", thing, region))
		if errors.Is(err, fleet.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Publish implements contract.Presence: PutItem under
// attribute_not_exists(ThingName) OR Generation < :g.
func (p *Presence) Publish(ctx context.Context, pr fleet.Presence) (bool, error) {
	item, err := ddbitem.MarshalPresence(pr)
	if err != nil {
		return false, fmt.Errorf("publish presence: %w", err)
	}
	_, err = p.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(p.table), Item: item,
		ConditionExpression:       aws.String("attribute_not_exists(ThingName) OR Generation < :g"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":g": item[ddbitem.AttrGeneration]},
	})
	if errors.Is(Sentinel(err), fleet.ErrConditionFailed) {
		return false, nil
	}
	if err != nil {
		return false, p.wrap(err, "publish presence of %s", pr.ThingName)
	}
	return true, nil
}

// Get implements contract.Presence.
func (p *Presence) Get(ctx context.Context, thing string) (fleet.Presence, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fleet.Presence{}, fmt.Errorf("get presence: %w", err)
	}
	return getItem(ctx, &p.common, ddbitem.PresenceKey(thing), ddbitem.UnmarshalPresence, "get presence of "+thing)
}

// Connected implements contract.Presence: Query ConnectedIndex shard by
// shard (projection ALL: no read of the table).
func (p *Presence) Connected(ctx context.Context, limit int, cursor string) ([]fleet.Presence, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list connected devices: limit %d: %w", limit, fleet.ErrInvalid)
	}
	shard, after, err := ddbitem.ParsePresenceCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("list connected devices: %w", err)
	}
	var out []fleet.Presence
	for ; shard < ddbitem.PresenceShards; shard++ {
		s := strconv.Itoa(shard)
		var start map[string]types.AttributeValue
		if after != "" {
			start = map[string]types.AttributeValue{ddbitem.AttrOnlineShard: &types.AttributeValueMemberS{Value: s},
				ddbitem.AttrThingName: &types.AttributeValueMemberS{Value: after}}
		}
		for {
			out0, err := p.client.Query(ctx, &dynamodb.QueryInput{
				TableName: aws.String(p.table), IndexName: aws.String(ddbitem.PresenceConnectedIndex),
				KeyConditionExpression:    aws.String("OnlineShard = :s"),
				ExpressionAttributeValues: map[string]types.AttributeValue{":s": &types.AttributeValueMemberS{Value: s}},
				ExclusiveStartKey:         start, Limit: aws.Int32(int32(limit - len(out))),
			})
			if err != nil {
				return nil, "", p.wrap(err, "list connected devices")
			}
			for _, item := range out0.Items {
				pr, err := ddbitem.UnmarshalPresence(item)
				if err != nil {
					return nil, "", fmt.Errorf("list connected devices: %w", err)
				}
				out = append(out, pr)
				if len(out) == limit {
					return out, ddbitem.PresenceCursor(s, pr.ThingName), nil
				}
			}
			if len(out0.LastEvaluatedKey) == 0 {
				break
			}
			start = out0.LastEvaluatedKey
		}
		after = ""
	}
	return out, "", nil
}
