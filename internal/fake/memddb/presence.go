package memddb

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// PresenceKey is the presence table's key schema.
var PresenceKey = KeySchema{HashKey: ddbitem.PresenceHashKey}

// PresenceIndexes adds the presence table's sparse ConnectedIndex (by
// OnlineShard; the fake's index has no range key, its reads come in key
// order, which is ThingName's).
var PresenceIndexes Option = func(g *GlobalTable) {
	WithIndex(ddbitem.PresenceConnectedIndex, ddbitem.AttrOnlineShard)(g)
}

// Presence implements contract.Presence on one replica of a table whose key
// schema is PresenceKey and which has PresenceIndexes.
type Presence struct{ t *Table }

// NewPresence returns the presence port of a replica.
func NewPresence(t *Table) *Presence { return &Presence{t: t} }

// Table returns the replica the port works on.
func (p *Presence) Table() *Table { return p.t }

// Record implements contract.Presence with fleet.ApplySession under the
// replica's lock.
func (p *Presence) Record(ctx context.Context, ev fleet.SessionRecord) (fleet.SessionRecord, bool, error) {
	if _, err := ddbitem.MarshalSession(ev); err != nil {
		return fleet.SessionRecord{}, false, fmt.Errorf("record session: %w", err)
	}
	ev.Seq = 0 // the store counts
	var stored fleet.SessionRecord
	changed := false
	err := p.t.UpdateItem(ctx, ddbitem.SessionKey(ev.ThingName, ev.Region), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		var prev *fleet.SessionRecord
		if old != nil {
			r, err := ddbitem.UnmarshalSession(old)
			if err != nil {
				return nil, err
			}
			prev = &r
		}
		next, ok := fleet.ApplySession(prev, ev)
		stored, changed = next, ok
		if !ok {
			return nil, errUnchanged
		}
		stored.Seq++
		return ddbitem.MarshalSession(stored)
	})
	if errors.Is(err, errUnchanged) {
		return stored, false, nil
	}
	if err != nil {
		return fleet.SessionRecord{}, false, fmt.Errorf("record session of %s in %s: %w", ev.ThingName, ev.Region, err)
	}
	return stored, changed, nil
}

// errUnchanged aborts an UpdateItem that has nothing to write.
var errUnchanged = errors.New("ConditionalCheckFailedException: unchanged")

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
		item, err := p.t.GetItem(ctx, ddbitem.SessionKey(thing, region))
		if err != nil {
			return nil, fmt.Errorf("read session record of %s in %s: %w", thing, region, err)
		}
		if item == nil {
			continue
		}
		r, err := ddbitem.UnmarshalSession(item)
		if err != nil {
			return nil, fmt.Errorf("read session record of %s in %s: %w", thing, region, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Publish implements contract.Presence: attribute_not_exists(ThingName) OR
// Generation < :g.
func (p *Presence) Publish(ctx context.Context, pr fleet.Presence) (bool, error) {
	item, err := ddbitem.MarshalPresence(pr)
	if err != nil {
		return false, fmt.Errorf("publish presence: %w", err)
	}
	err = p.t.PutItem(ctx, item, func(old map[string]types.AttributeValue) error {
		if old == nil {
			return nil
		}
		if g, _ := strconv.ParseInt(numberAttr(old, ddbitem.AttrGeneration), 10, 64); g < pr.Generation {
			return nil
		}
		return fmt.Errorf("ConditionalCheckFailedException: generation: %w", fleet.ErrConditionFailed)
	})
	if errors.Is(err, fleet.ErrConditionFailed) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("publish presence of %s: %w", pr.ThingName, err)
	}
	return true, nil
}

// Get implements contract.Presence.
func (p *Presence) Get(ctx context.Context, thing string) (fleet.Presence, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fleet.Presence{}, fmt.Errorf("get presence: %w", err)
	}
	item, err := p.t.GetItem(ctx, ddbitem.PresenceKey(thing))
	if err != nil {
		return fleet.Presence{}, fmt.Errorf("get presence of %s: %w", thing, err)
	}
	if item == nil {
		return fleet.Presence{}, fmt.Errorf("get presence of %s: %w", thing, fleet.ErrNotFound)
	}
	return ddbitem.UnmarshalPresence(item)
}

// Connected implements contract.Presence: the shards in order, each in
// thing-name order.
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
		keys, err := p.t.QueryIndex(ctx, ddbitem.PresenceConnectedIndex, &types.AttributeValueMemberS{Value: s})
		if err != nil {
			return nil, "", fmt.Errorf("list connected devices: %w", err)
		}
		for _, k := range keys {
			thing := stringAttr(k, ddbitem.AttrThingName)
			if after != "" && thing <= after {
				continue
			}
			item, err := p.t.GetItem(ctx, ddbitem.PresenceKey(thing))
			if err != nil {
				return nil, "", fmt.Errorf("list connected devices: %w", err)
			}
			if item == nil {
				continue
			}
			pr, err := ddbitem.UnmarshalPresence(item)
			if err != nil {
				return nil, "", fmt.Errorf("list connected devices: %w", err)
			}
			out = append(out, pr)
			if len(out) == limit {
				return out, ddbitem.PresenceCursor(s, thing), nil
			}
		}
		after = ""
	}
	return out, "", nil
}
