package memddb

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/fake/journal"
)

// Restore loads into every replica what j holds of this table (items and
// the tombstones that last writer wins needs, the replications not yet
// applied, and with WithDurableStream the stream records not yet
// delivered), and journals every later change into j: a write returns once
// its change is durable. Call it once, on a table nothing has written to
// yet. The replications found are applied at once (they are overdue), and
// the records found are handed to the replica's subscribers, or kept for
// the first one.
//
// A replica of which j holds nothing (no entry, no replication) while
// another holds entries was added to the table since: it is filled from the
// first replica that has entries, as DynamoDB fills a new replica, each
// item emitting a record on its stream (so that a subscriber learns of it).
//
// A record that does not decode fails Restore with journal.ErrCorrupt, and
// the table journals nothing: the caller should not use it.
func (g *GlobalTable) Restore(j journal.Journal) error {
	if j == nil {
		return errors.New("restore table " + g.name + ": no journal")
	}
	if g.isClosed() {
		return errors.New("restore table " + g.name + ": table closed")
	}
	if g.j != nil {
		return errors.New("restore table " + g.name + ": restored already")
	}
	var pending [][]replication
	for _, r := range g.regions {
		t := g.replicas[r]
		if err := t.restoreItems(j); err != nil {
			return fmt.Errorf("restore table %s in %s: %w", g.name, r, err)
		}
		reps, err := t.restoreOutbox(j)
		if err != nil {
			return fmt.Errorf("restore table %s in %s: %w", g.name, r, err)
		}
		pending = append(pending, reps)
		if g.durableStream {
			if err := t.restoreStream(j); err != nil {
				return fmt.Errorf("restore table %s in %s: %w", g.name, r, err)
			}
		}
	}
	g.j = j
	g.backfill(pending)
	for i, r := range g.regions {
		t := g.replicas[r]
		t.mu.Lock()
		for _, d := range t.backlog {
			if len(t.subs) == 0 {
				break
			}
			t.undelivered[d.seq] = len(t.subs)
			for _, s := range t.subs {
				s.push(d)
			}
		}
		if len(t.subs) > 0 {
			t.backlog = nil
		}
		t.mu.Unlock()
		for _, rep := range pending[i] {
			t.enqueue(rep)
		}
	}
	return nil
}

// backfill fills the replicas added since the journal was written (see
// Restore) from the first replica that has entries.
func (g *GlobalTable) backfill(pending [][]replication) {
	var src *Table
	for _, r := range g.regions {
		if t := g.replicas[r]; len(t.items) > 0 {
			src = t
			break
		}
	}
	if src == nil {
		return
	}
	for i, r := range g.regions {
		t := g.replicas[r]
		if len(t.items) > 0 || len(pending[i]) > 0 {
			continue
		}
		t.mu.Lock()
		for h, rs := range src.items {
			for rk, e := range rs {
				t.apply(h, rk, nil, e.item, e.ts, e.origin, nil)
			}
		}
		_ = t.appendJournal() // nothing waits: a lost backfill is made again
		t.mu.Unlock()
	}
}

// restoreItems loads the replica's entries and indexes them. An entry's
// item must carry the key it is stored under.
func (t *Table) restoreItems(j journal.Journal) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.items) != 0 {
		return errors.New("the replica holds items already")
	}
	return j.Scan(t.buckets.items, func(k, v []byte) error {
		h, r, err := decodeEntryKey(k)
		if err != nil {
			return err
		}
		e, err := decodeEntry(v)
		if err != nil {
			return fmt.Errorf("item %q: %w", k, err)
		}
		if e.item != nil {
			h2, r2, err := t.keyParts(e.item)
			if err != nil || h2 != h || r2 != r {
				return fmt.Errorf("item %q does not carry its key: %w", k, journal.ErrCorrupt)
			}
			if err := t.checkIndexKeys(e.item); err != nil {
				return fmt.Errorf("item %q: %w: %w", k, journal.ErrCorrupt, err)
			}
		}
		if t.items[h] == nil {
			t.items[h] = map[string]*entry{}
		}
		t.items[h][r] = e
		t.reindex([2]string{h, r}, nil, e.item)
		return nil
	})
}

// restoreOutbox reads the replications waiting for this replica, in the
// order they were written, due now.
func (t *Table) restoreOutbox(j journal.Journal) ([]replication, error) {
	var reps []replication
	now := time.Now()
	err := j.Scan(t.buckets.outbox, func(k, v []byte) error {
		seq, err := journal.ParseSeqKey(k)
		if err != nil {
			return fmt.Errorf("replication: %w", err)
		}
		rep, err := decodeReplication(v)
		if err != nil {
			return fmt.Errorf("replication %d: %w", seq, err)
		}
		if rep.item != nil {
			h, r, err := t.keyParts(rep.item)
			if err != nil || h != rep.hash || r != rep.rng {
				return fmt.Errorf("replication %d does not carry its key: %w", seq, journal.ErrCorrupt)
			}
		}
		rep.seq, rep.due = seq, now
		reps = append(reps, rep)
		if seq > t.outSeq.Load() {
			t.outSeq.Store(seq)
		}
		return nil
	})
	return reps, err
}

// restoreStream reads the records not yet delivered into the backlog, and
// numbers the replica's next records after them.
func (t *Table) restoreStream(j journal.Journal) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return j.Scan(t.buckets.stream, func(k, v []byte) error {
		d, err := decodeDelivery(k, v)
		if err != nil {
			return err
		}
		t.backlog = append(t.backlog, d)
		t.seq = max(t.seq, d.seq)
		return nil
	})
}

// decodeDelivery decodes a journaled stream record.
func decodeDelivery(k, v []byte) (delivery, error) {
	seq, err := journal.ParseSeqKey(k)
	if err != nil || seq == 0 || seq > 1<<62 {
		return delivery{}, fmt.Errorf("stream record key %x: %w", k, journal.ErrCorrupt)
	}
	var rec events.DynamoDBEventRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return delivery{}, fmt.Errorf("stream record %d: %w: %w", seq, journal.ErrCorrupt, err)
	}
	if rec.EventName == "" || rec.Change.Keys == nil {
		return delivery{}, fmt.Errorf("stream record %d has no event or keys: %w", seq, journal.ErrCorrupt)
	}
	return delivery{rec: rec, seq: int64(seq)}, nil
}
