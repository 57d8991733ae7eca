// Package memddb is DynamoDB global tables held in memory: one Table per
// replica region, each with its own items and its own stream. A write lands
// in its replica at once, emits a stream record there, and reaches every
// other replica after the replication lag, where it is applied last writer
// wins and emits that replica's own stream record, as DynamoDB global tables
// (version 2019.11.21) do. Stream records are the aws-lambda-go events that a
// Lambda event source mapping delivers.
//
// Items are SDK attribute values (aws-sdk-go-v2 dynamodb types), marshalled
// through internal/aws/ddbitem like the AWS adapter, so both store identical
// items. Conditions are Go functions, evaluated atomically against the local
// replica only (a global table's conditions never see other replicas' writes
// that have not arrived yet).
//
// Everything is safe for concurrent use.
package memddb

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/journal"
)

// KeySchema names a table's key attributes. RangeKey is empty for a table
// with a partition key only.
type KeySchema struct {
	HashKey, RangeKey string
}

// Stream view types.
const (
	ViewKeysOnly        = "KEYS_ONLY"
	ViewNewImage        = "NEW_IMAGE"
	ViewOldImage        = "OLD_IMAGE"
	ViewNewAndOldImages = "NEW_AND_OLD_IMAGES"
)

// DefaultAccountID is the account of stream ARNs unless WithAccount is given.
const DefaultAccountID = "123456789012"

// streamLogCap is the number of recent records a replica keeps for Records
// at least (and twice that at most).
const streamLogCap = 10000

// Option configures a GlobalTable.
type Option func(*GlobalTable)

// WithReplicationLag delays the copy of a write to the other replicas.
func WithReplicationLag(d time.Duration) Option { return func(g *GlobalTable) { g.lag = d } }

// WithStreamView sets the stream view type (ViewKeysOnly, ViewNewImage,
// ViewOldImage, ViewNewAndOldImages; default ViewNewAndOldImages).
func WithStreamView(view string) Option { return func(g *GlobalTable) { g.view = view } }

// WithClock sets the clock of write timestamps (last writer wins) and of the
// records' ApproximateCreationDateTime. The lag is measured in real time.
func WithClock(now func() time.Time) Option { return func(g *GlobalTable) { g.now = now } }

// WithAccount sets the account of the stream ARNs.
func WithAccount(id string) Option { return func(g *GlobalTable) { g.account = id } }

// WithHook calls hook before every API call on every replica with the
// DynamoDB operation name (GetItem, PutItem, UpdateItem, DeleteItem, Query,
// Scan); a non-nil error is the call's result and nothing changes.
// Table.SetHook replaces it on one replica.
func WithHook(hook func(ctx context.Context, op string) error) Option {
	return func(g *GlobalTable) { g.hook = hook }
}

// WithIndex adds a global secondary index named name whose hash key is the
// item attribute hashAttr (projection KEYS_ONLY), read with Table.QueryIndex.
// Every replica maintains it in the same step as the item it stores, for its
// own writes and for replicated ones alike, so unlike DynamoDB's an index
// read here is never behind its table. The index is sparse: an item without
// hashAttr is not in it. As DynamoDB does, a write whose hashAttr is an empty
// string or binary, or neither S, N nor B, is refused with ErrInvalid (a
// ValidationException); the attribute's type is not checked further.
func WithIndex(name, hashAttr string) Option {
	return func(g *GlobalTable) { g.indexes = append(g.indexes, secondaryIndex{name: name, hashAttr: hashAttr}) }
}

// WithDurableStream makes the replicas' stream records durable once the
// table journals (Restore): a record is journaled until every subscriber it
// was handed to has delivered it, and one emitted while the replica has no
// subscriber is kept for the first that subscribes. After a restart, the
// records not yet delivered are delivered again (at least once), as a
// stream's shard keeps its records for 24 hours whatever its readers do.
// Without it, a record is held in memory only, and lost in a restart.
func WithDurableStream() Option { return func(g *GlobalTable) { g.durableStream = true } }

// WithDeferredDurability makes a journaled write return without waiting
// for its change to be durable. The journal keeps the changes in order, so
// the change is durable once anything appended after it is: for a table
// written by functions whose events a durable queue keeps until they end
// (the data table, written by ingest), a change lost in a crash is made
// again when the event runs again, and a write need not wait for a commit.
func WithDeferredDurability() Option { return func(g *GlobalTable) { g.deferDurability = true } }

// WithManualReplication starts no replication goroutine: a write queues its
// copy for every other replica, and the copy lands only when the caller calls
// Table.ApplyNext on that replica (the deterministic simulation decides when,
// on its virtual clock). Stream records are read with Table.StreamSince.
func WithManualReplication() Option { return func(g *GlobalTable) { g.manual = true } }

// secondaryIndex is a global secondary index of a GlobalTable.
type secondaryIndex struct{ name, hashAttr string }

// GlobalTable is one global table with a replica per region.
type GlobalTable struct {
	name    string
	key     KeySchema
	lag     time.Duration
	view    string
	now     func() time.Time
	account string
	hook    func(ctx context.Context, op string) error
	label   string
	indexes []secondaryIndex
	manual  bool

	// j journals every change once Restore has given it (nil: memory only).
	j               journal.Journal
	durableStream   bool
	deferDurability bool

	replicas map[string]*Table
	regions  []string

	pmu     sync.Mutex
	pending int
	idle    chan struct{} // closed while pending == 0
	closed  bool
	stop    chan struct{}
	// paused holds the regions whose replicas are cut off (Pause); held
	// counts the work waiting for them, which pending leaves out.
	paused map[string]bool
	held   int
}

// NewGlobalTable returns a global table with a replica in each region. It
// panics only on a programming error: no hash key, no regions, a region
// twice, an unknown stream view, or an index without a name or attribute or
// twice.
func NewGlobalTable(name string, key KeySchema, regions []string, opts ...Option) *GlobalTable {
	g := &GlobalTable{
		name: name, key: key, view: ViewNewAndOldImages, now: time.Now, account: DefaultAccountID,
		replicas: map[string]*Table{}, idle: make(chan struct{}), stop: make(chan struct{}),
	}
	close(g.idle)
	for _, o := range opts {
		o(g)
	}
	switch {
	case key.HashKey == "":
		panic("memddb: table " + name + " has no hash key")
	case len(regions) == 0:
		panic("memddb: table " + name + " has no regions")
	}
	switch g.view {
	case ViewKeysOnly, ViewNewImage, ViewOldImage, ViewNewAndOldImages:
	default:
		panic("memddb: unknown stream view type " + g.view)
	}
	for i, ix := range g.indexes {
		switch {
		case ix.name == "" || ix.hashAttr == "":
			panic("memddb: table " + name + " has an index without a name or hash key")
		case slices.ContainsFunc(g.indexes[:i], func(o secondaryIndex) bool { return o.name == ix.name }):
			panic("memddb: table " + name + " has index " + ix.name + " twice")
		}
	}
	g.label = g.now().UTC().Format("2006-01-02T15:04:05.000")
	for _, r := range regions {
		if g.replicas[r] != nil {
			panic("memddb: region " + r + " twice")
		}
		t := &Table{g: g, region: r, items: map[string]map[string]*entry{}, idx: map[string]map[string]map[[2]string]struct{}{},
			hook: g.hook, wake: make(chan struct{}, 1), undelivered: map[int64]int{}}
		prefix := "ddb/" + name + "/" + r + "/"
		t.buckets = buckets{items: prefix + "items", outbox: prefix + "outbox", stream: prefix + "stream"}
		for _, ix := range g.indexes {
			t.idx[ix.name] = map[string]map[[2]string]struct{}{}
		}
		g.replicas[r] = t
		g.regions = append(g.regions, r)
		if !g.manual {
			go t.replicator()
		}
	}
	return g
}

// Name returns the table name.
func (g *GlobalTable) Name() string { return g.name }

// Key returns the key schema.
func (g *GlobalTable) Key() KeySchema { return g.key }

// Regions returns the replica regions in the order given.
func (g *GlobalTable) Regions() []string { return slices.Clone(g.regions) }

// Replica returns the replica of region, or nil if there is none.
func (g *GlobalTable) Replica(region string) *Table { return g.replicas[region] }

// SetReplicationLag changes the lag of writes made from now on.
func (g *GlobalTable) SetReplicationLag(d time.Duration) {
	g.pmu.Lock()
	g.lag = d
	g.pmu.Unlock()
}

func (g *GlobalTable) currentLag() time.Duration {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.lag
}

// add counts n units of work (replications, deliveries) in flight; false
// once the table is closed.
func (g *GlobalTable) add(n int) bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if g.closed {
		return false
	}
	if g.pending == 0 && n > 0 {
		g.idle = make(chan struct{})
	}
	g.pending += n
	return true
}

func (g *GlobalTable) done(n int) {
	if n == 0 {
		return
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if g.closed {
		return
	}
	g.pending -= n
	if g.pending == 0 {
		close(g.idle)
	}
}

// WaitIdle waits until every replication has been applied and every stream
// record delivered to the subscribers (including records that those
// deliveries cause), or ctx ends.
func (g *GlobalTable) WaitIdle(ctx context.Context) error {
	g.pmu.Lock()
	idle := g.idle
	g.pmu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for table %s to be idle: %w", g.name, ctx.Err())
	}
}

// Flush applies every pending replication now, ignoring the lag, and waits
// until the table is idle. Replications caused by deliveries made meanwhile
// (a subscriber that writes) are hurried too.
func (g *GlobalTable) Flush(ctx context.Context) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		for _, t := range g.replicas {
			t.rmu.Lock()
			for i := range t.rq {
				t.rq[i].due = time.Time{}
			}
			t.rmu.Unlock()
			t.poke()
		}
		g.pmu.Lock()
		idle := g.idle
		g.pmu.Unlock()
		select {
		case <-idle:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("flush table %s: %w", g.name, ctx.Err())
		case <-tick.C:
		}
	}
}

// Close stops replication and stream delivery; pending work is dropped and
// later calls fail with ErrUnavailable.
func (g *GlobalTable) Close() {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	close(g.stop)
	g.held = 0
	if g.pending != 0 {
		g.pending = 0
		close(g.idle)
	}
}

func (g *GlobalTable) isClosed() bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.closed
}

// entry is an item or a tombstone (item == nil) with its last-writer-wins
// version.
type entry struct {
	item   map[string]types.AttributeValue
	ts     time.Time
	origin string
}

func (e *entry) newerThan(ts time.Time, origin string) bool {
	return e.ts.After(ts) || (e.ts.Equal(ts) && e.origin >= origin)
}

type replication struct {
	due    time.Time
	seq    uint64 // its key in the target's journaled outbox (0: not journaled)
	hash   string
	rng    string
	item   map[string]types.AttributeValue
	ts     time.Time
	origin string
	// held: the receiving or the origin replica is paused; it waits in
	// place, counted apart from pending (see Pause).
	held bool
}

// Table is one region's replica of a global table.
type Table struct {
	g      *GlobalTable
	region string

	mu    sync.Mutex
	items map[string]map[string]*entry // hash key -> range key -> entry
	// idx holds the keys of the items in each index: index name -> encoded
	// index hash key value -> (hash, range) keys. Tombstones are never in it.
	idx    map[string]map[string]map[[2]string]struct{}
	seq    int64
	subs   []*subscriber
	log    []events.DynamoDBEventRecord
	hook   func(ctx context.Context, op string) error
	after  func(ctx context.Context, op string)
	hookMu sync.Mutex

	rmu  sync.Mutex
	rq   []replication // replications to apply here, in arrival order
	wake chan struct{}

	// Journaling (Restore): the changes made under mu not yet appended,
	// the last key of this replica's outbox, the subscribers each
	// journaled record still waits for, and the records kept for the
	// first subscriber.
	jops        []journal.Op
	outSeq      atomic.Uint64
	undelivered map[int64]int
	backlog     []delivery
	buckets     buckets
}

// buckets are a replica's journal buckets.
type buckets struct{ items, outbox, stream string }

// Region returns the replica's region.
func (t *Table) Region() string { return t.region }

// Global returns the global table of the replica.
func (t *Table) Global() *GlobalTable { return t.g }

// StreamARN is the ARN of the replica's stream.
func (t *Table) StreamARN() string {
	return "arn:aws:dynamodb:" + t.region + ":" + t.g.account + ":table/" + t.g.name + "/stream/" + t.g.label
}

// SetHook replaces this replica's hook (nil removes it); see WithHook.
func (t *Table) SetHook(hook func(ctx context.Context, op string) error) {
	t.hookMu.Lock()
	t.hook = hook
	t.hookMu.Unlock()
}

// SetAfter sets a function called after each successful API call on this
// replica, outside its locks (a test may end the goroutine there to simulate
// a crash right after the call).
func (t *Table) SetAfter(after func(ctx context.Context, op string)) {
	t.hookMu.Lock()
	t.after = after
	t.hookMu.Unlock()
}

func (t *Table) before(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w: %w", op, t.g.name, fleet.ErrUnavailable, err)
	}
	if t.g.isClosed() {
		return fmt.Errorf("%s %s: table closed: %w", op, t.g.name, fleet.ErrUnavailable)
	}
	t.hookMu.Lock()
	hook := t.hook
	t.hookMu.Unlock()
	if hook != nil {
		return hook(ctx, op)
	}
	return nil
}

func (t *Table) afterCall(ctx context.Context, op string) {
	t.hookMu.Lock()
	after := t.after
	t.hookMu.Unlock()
	if after != nil {
		after(ctx, op)
	}
}

// Condition checks the current item (nil when absent) before a write. A
// non-nil error refuses the write and is returned as the write's error; it
// should wrap fleet.ErrConditionFailed (or another sentinel).
type Condition func(old map[string]types.AttributeValue) error

// keyParts returns the encoded hash and range key of item, which must carry
// the key attributes as S, N or B (ErrInvalid otherwise).
func (t *Table) keyParts(item map[string]types.AttributeValue) (string, string, error) {
	h, err := encodeKeyValue(t.g.key.HashKey, item[t.g.key.HashKey])
	if err != nil {
		return "", "", err
	}
	if t.g.key.RangeKey == "" {
		return h, "", nil
	}
	r, err := encodeKeyValue(t.g.key.RangeKey, item[t.g.key.RangeKey])
	if err != nil {
		return "", "", err
	}
	return h, r, nil
}

func encodeKeyValue(name string, av types.AttributeValue) (string, error) {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		if v.Value == "" {
			return "", fmt.Errorf("ValidationException: key attribute %s is an empty string: %w", name, fleet.ErrInvalid)
		}
		return "S" + v.Value, nil
	case *types.AttributeValueMemberN:
		if _, ok := new(big.Float).SetString(v.Value); !ok {
			return "", fmt.Errorf("ValidationException: key attribute %s is not a number: %w", name, fleet.ErrInvalid)
		}
		return "N" + v.Value, nil
	case *types.AttributeValueMemberB:
		if len(v.Value) == 0 {
			return "", fmt.Errorf("ValidationException: key attribute %s is empty binary: %w", name, fleet.ErrInvalid)
		}
		return "B" + string(v.Value), nil
	case nil:
		return "", fmt.Errorf("ValidationException: missing key attribute %s: %w", name, fleet.ErrInvalid)
	default:
		return "", fmt.Errorf("ValidationException: key attribute %s must be S, N or B, not %T: %w", name, av, fleet.ErrInvalid)
	}
}

// compareKeys orders encoded key values as DynamoDB orders range keys: S and
// B by bytes, N by value.
func compareKeys(a, b string) int {
	if a != "" && b != "" && a[0] == 'N' && b[0] == 'N' {
		x, _ := new(big.Float).SetString(a[1:])
		y, _ := new(big.Float).SetString(b[1:])
		if x != nil && y != nil {
			return x.Cmp(y)
		}
	}
	return strings.Compare(a, b)
}

// GetItem returns the item with key, or nil when there is none.
func (t *Table) GetItem(ctx context.Context, key map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
	const op = "GetItem"
	if err := t.before(ctx, op); err != nil {
		return nil, err
	}
	h, r, err := t.keyParts(key)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, t.g.name, err)
	}
	t.mu.Lock()
	var item map[string]types.AttributeValue
	if e := t.items[h][r]; e != nil && e.item != nil {
		item = cloneItem(e.item)
	}
	t.mu.Unlock()
	t.afterCall(ctx, op)
	return item, nil
}

// PutItem writes item if cond (nil: always) accepts the current item.
func (t *Table) PutItem(ctx context.Context, item map[string]types.AttributeValue, cond Condition) error {
	item = cloneItem(item)
	return t.writeCall(ctx, "PutItem", item, func(_, _ string, old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if err := check(cond, old); err != nil {
			return nil, err
		}
		return item, nil
	})
}

// UpdateItem replaces the item with key by what update returns from the
// current item (nil when absent), atomically; an error from update refuses
// the write and is returned. The returned item must keep the key.
func (t *Table) UpdateItem(ctx context.Context, key map[string]types.AttributeValue, update func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error)) error {
	return t.writeCall(ctx, "UpdateItem", key, func(h, r string, old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		item, err := update(cloneItem(old))
		if err != nil {
			return nil, err
		}
		h2, r2, err := t.keyParts(item)
		if err != nil {
			return nil, err
		}
		if h2 != h || r2 != r {
			return nil, fmt.Errorf("ValidationException: an update cannot change the key: %w", fleet.ErrInvalid)
		}
		return cloneItem(item), nil
	})
}

// DeleteItem removes the item with key if cond (nil: always) accepts it.
// Removing an absent item is a success and writes nothing.
func (t *Table) DeleteItem(ctx context.Context, key map[string]types.AttributeValue, cond Condition) error {
	return t.writeCall(ctx, "DeleteItem", key, func(_, _ string, old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		return nil, check(cond, old)
	})
}

// writeCall runs one write API call: the fault hook, fn from the current item at
// key (h and r are the key's parts) to the new one, and the after-call hook
// once it succeeded.
func (t *Table) writeCall(ctx context.Context, op string, key map[string]types.AttributeValue, fn func(h, r string, old map[string]types.AttributeValue) (map[string]types.AttributeValue, error)) error {
	if err := t.before(ctx, op); err != nil {
		return err
	}
	h, r, err := t.keyParts(key)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, t.g.name, err)
	}
	if err := t.write(h, r, func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		return fn(h, r, old)
	}); err != nil {
		return fmt.Errorf("%s %s: %w", op, t.g.name, err)
	}
	t.afterCall(ctx, op)
	return nil
}

// check applies a write condition (nil: always true) to the current item.
func check(cond Condition, old map[string]types.AttributeValue) error {
	if cond == nil {
		return nil
	}
	return cond(old)
}

// write applies a local write: fn maps the current item to the new one (nil
// deletes). A change emits a stream record and is queued for every other
// replica.
//
// With a journal, the change (the item and its pending replications) is
// appended while t.mu is held, so the journal has the replica's changes in
// their order, and write returns once it is durable: a write that returned
// survives a crash. A reader may see a change a moment before it is
// durable; if the process dies in that moment, the change is lost with
// whatever was waiting for it.
func (t *Table) write(h, r string, fn func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error)) error {
	t.mu.Lock()
	err := t.writeLocked(h, r, fn, nil)
	wait := t.appendJournal()
	t.mu.Unlock()
	if err != nil || t.g.deferDurability {
		return err
	}
	return journaled(wait)
}

// appendJournal appends the changes made under t.mu since the last call as
// one group. The caller holds t.mu.
func (t *Table) appendJournal() func() error {
	if len(t.jops) == 0 {
		return nil
	}
	ops := t.jops
	t.jops = nil
	return t.g.j.Append(ops...)
}

// journaled waits for a group to be durable (nil: nothing was appended).
func journaled(wait func() error) error {
	if wait == nil {
		return nil
	}
	if err := wait(); err != nil {
		return fmt.Errorf("the change was made but not kept (%w): %w", err, fleet.ErrUnavailable)
	}
	return nil
}

// writeLocked is write with t.mu held; who is the record's userIdentity
// (nil for a caller's write).
func (t *Table) writeLocked(h, r string, fn func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error), who *events.DynamoDBUserIdentity) error {
	e := t.items[h][r]
	var old map[string]types.AttributeValue
	if e != nil {
		old = e.item
	}
	item, err := fn(old)
	if err != nil {
		return err
	}
	if err := t.checkIndexKeys(item); err != nil {
		return err
	}
	if reflect.DeepEqual(old, item) {
		return nil // no change: DynamoDB writes no stream record
	}
	ts := t.g.now()
	if e != nil && !ts.After(e.ts) {
		ts = e.ts.Add(time.Nanosecond) // the local write is always the newest here
	}
	enc := t.apply(h, r, old, item, ts, t.region, who)
	lag := t.g.currentLag()
	for _, other := range t.g.regions {
		if other == t.region {
			continue
		}
		target := t.g.replicas[other]
		rep := replication{due: time.Now().Add(lag), hash: h, rng: r, item: item, ts: ts, origin: t.region}
		if t.g.j != nil {
			// The copy is journaled in the target's outbox in the same
			// group as the write: a write that was made is copied, even
			// after a restart.
			rep.seq = target.outSeq.Add(1)
			t.jops = append(t.jops, journal.Put(target.buckets.outbox, journal.SeqKey(rep.seq),
				encodeReplication(h, r, ts, t.region, enc)))
		}
		target.enqueue(rep)
	}
	return nil
}

// apply stores the new version, updates the indexes and emits its stream
// record. It is the only place where a replica's items change (local and
// replicated writes alike), so the indexes follow every change. The caller
// holds t.mu. With a journal, it queues the new version in t.jops and
// returns the item's stored form.
func (t *Table) apply(h, r string, old, item map[string]types.AttributeValue, ts time.Time, origin string, who *events.DynamoDBUserIdentity) []byte {
	var enc []byte
	if t.g.j != nil {
		var err error
		if enc, err = encodeItem(item); err != nil {
			// Stored items hold only SDK member types, which all encode.
			panic("memddb: stored item cannot be journaled: " + err.Error())
		}
		t.jops = append(t.jops, journal.Put(t.buckets.items, entryKey(h, r), encodeEntry(ts, origin, enc)))
	}
	if t.items[h] == nil {
		t.items[h] = map[string]*entry{}
	}
	var prev map[string]types.AttributeValue
	if e := t.items[h][r]; e != nil {
		prev = e.item
	}
	t.reindex([2]string{h, r}, prev, item)
	t.items[h][r] = &entry{item: item, ts: ts, origin: origin}
	if reflect.DeepEqual(old, item) {
		return enc
	}
	t.emit(old, item, who)
	return enc
}

func (t *Table) enqueue(rep replication) {
	t.rmu.Lock()
	rep.held = t.g.isHeld(t.region, rep.origin)
	if !t.g.addQueued(rep.held) {
		t.rmu.Unlock()
		return
	}
	t.rq = append(t.rq, rep)
	t.rmu.Unlock()
	t.poke()
}

func (t *Table) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// replicator applies the replications that reach this replica, in order.
func (t *Table) replicator() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		t.rmu.Lock()
		i := t.nextLocked()
		if i < 0 {
			t.rmu.Unlock()
			select {
			case <-t.wake:
				continue
			case <-t.g.stop:
				return
			}
		}
		head := t.rq[i]
		if wait := time.Until(head.due); !head.due.IsZero() && wait > 0 {
			t.rmu.Unlock()
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-t.wake:
				timer.Stop()
			case <-t.g.stop:
				timer.Stop()
				return
			}
			continue
		}
		t.takeLocked(i)
		t.rmu.Unlock()
		t.applyReplicated(head)
		t.g.done(1)
	}
}

// Queued is the number of replications waiting to land in this replica.
func (t *Table) Queued() int {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	return len(t.rq)
}

// ApplyNext lands the oldest replication waiting for this replica, whatever
// its due time, and reports whether there was one (WithManualReplication).
// A replication held by a paused replica is not one.
func (t *Table) ApplyNext() bool {
	t.rmu.Lock()
	i := t.nextLocked()
	if i < 0 {
		t.rmu.Unlock()
		return false
	}
	head := t.rq[i]
	t.takeLocked(i)
	t.rmu.Unlock()
	t.applyReplicated(head)
	t.g.done(1)
	return true
}

// applyReplicated applies a write from another replica, last writer wins.
// With a journal, the new version and the removal of the replication from
// the outbox are one group; nothing waits for it, since a replication lost
// in a crash is still in the outbox.
func (t *Table) applyReplicated(rep replication) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rep.seq != 0 {
		defer func() { _ = t.appendJournal() }() // nothing waits: see above
		t.jops = append(t.jops, journal.Delete(t.buckets.outbox, journal.SeqKey(rep.seq)))
	}
	e := t.items[rep.hash][rep.rng]
	if e != nil && e.newerThan(rep.ts, rep.origin) {
		return
	}
	var old map[string]types.AttributeValue
	if e != nil {
		old = e.item
	}
	t.apply(rep.hash, rep.rng, old, rep.item, rep.ts, rep.origin, nil)
}

// Query returns the items whose hash key is hashValue, by range key
// (descending unless forward), at most limit (all when limit <= 0).
func (t *Table) Query(ctx context.Context, hashValue types.AttributeValue, forward bool, limit int) ([]map[string]types.AttributeValue, error) {
	const op = "Query"
	if err := t.before(ctx, op); err != nil {
		return nil, err
	}
	h, err := encodeKeyValue(t.g.key.HashKey, hashValue)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, t.g.name, err)
	}
	t.mu.Lock()
	ranges := make([]string, 0, len(t.items[h]))
	for r, e := range t.items[h] {
		if e.item != nil {
			ranges = append(ranges, r)
		}
	}
	slices.SortFunc(ranges, compareKeys)
	if !forward {
		slices.Reverse(ranges)
	}
	if limit > 0 && len(ranges) > limit {
		ranges = ranges[:limit]
	}
	out := make([]map[string]types.AttributeValue, len(ranges))
	for i, r := range ranges {
		out[i] = cloneItem(t.items[h][r].item)
	}
	t.mu.Unlock()
	t.afterCall(ctx, op)
	return out, nil
}

// Scan returns up to limit items (all when limit <= 0) after exclusiveStart
// (nil for the start) in key order, and the key of the last item returned
// when more items follow (nil at the end).
func (t *Table) Scan(ctx context.Context, exclusiveStart map[string]types.AttributeValue, limit int) ([]map[string]types.AttributeValue, map[string]types.AttributeValue, error) {
	const op = "Scan"
	if err := t.before(ctx, op); err != nil {
		return nil, nil, err
	}
	var startH, startR string
	if exclusiveStart != nil {
		var err error
		if startH, startR, err = t.keyParts(exclusiveStart); err != nil {
			return nil, nil, fmt.Errorf("%s %s: ExclusiveStartKey: %w", op, t.g.name, err)
		}
	}
	t.mu.Lock()
	keys := t.liveKeys()
	if exclusiveStart != nil {
		i, _ := slices.BinarySearchFunc(keys, [2]string{startH, startR}, compareKeyPair)
		for i < len(keys) && compareKeyPair(keys[i], [2]string{startH, startR}) <= 0 {
			i++
		}
		keys = keys[i:]
	}
	more := limit > 0 && len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]map[string]types.AttributeValue, len(keys))
	for i, k := range keys {
		out[i] = cloneItem(t.items[k[0]][k[1]].item)
	}
	t.mu.Unlock()
	var last map[string]types.AttributeValue
	if more {
		last = t.keyOf(out[len(out)-1])
	}
	t.afterCall(ctx, op)
	return out, last, nil
}

// checkIndexKeys refuses an item whose index hash key attribute is present
// but cannot be a key value (an empty string or binary, or another type than
// S, N and B), as DynamoDB refuses it.
func (t *Table) checkIndexKeys(item map[string]types.AttributeValue) error {
	if item == nil {
		return nil
	}
	for _, ix := range t.g.indexes {
		av, ok := item[ix.hashAttr]
		if !ok {
			continue // sparse: the item is not in the index
		}
		if _, err := encodeKeyValue(ix.hashAttr, av); err != nil {
			return fmt.Errorf("a value specified for a key of secondary index %s is not supported: %w", ix.name, err)
		}
	}
	return nil
}

// indexValue is the encoded value of item's attribute attr, false when the
// item is nil or not in the index.
func indexValue(item map[string]types.AttributeValue, attr string) (string, bool) {
	av, ok := item[attr]
	if !ok {
		return "", false
	}
	v, err := encodeKeyValue(attr, av)
	return v, err == nil
}

// reindex moves key k from the index entries of prev to those of next (each
// nil for no item: an insert, a delete, a tombstone). The caller holds t.mu.
func (t *Table) reindex(k [2]string, prev, next map[string]types.AttributeValue) {
	for _, ix := range t.g.indexes {
		entries := t.idx[ix.name]
		pv, inPrev := indexValue(prev, ix.hashAttr)
		nv, inNext := indexValue(next, ix.hashAttr)
		if inPrev && inNext && pv == nv {
			continue
		}
		if inPrev {
			delete(entries[pv], k)
			if len(entries[pv]) == 0 {
				delete(entries, pv)
			}
		}
		if inNext {
			if entries[nv] == nil {
				entries[nv] = map[[2]string]struct{}{}
			}
			entries[nv][k] = struct{}{}
		}
	}
}

// QueryIndex returns the items of the global secondary index named index
// whose hash key is value, projected as KEYS_ONLY (the table's key
// attributes and the index's), in the table's key order. An unknown index or
// an invalid value is ErrInvalid (a ValidationException). The hook sees it
// as the operation "Query".
func (t *Table) QueryIndex(ctx context.Context, index string, value types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	const op = "Query"
	if err := t.before(ctx, op); err != nil {
		return nil, err
	}
	i := slices.IndexFunc(t.g.indexes, func(ix secondaryIndex) bool { return ix.name == index })
	if i < 0 {
		return nil, fmt.Errorf("%s %s: ValidationException: the table does not have the specified index: %s: %w", op, t.g.name, index, fleet.ErrInvalid)
	}
	attr := t.g.indexes[i].hashAttr
	v, err := encodeKeyValue(attr, value)
	if err != nil {
		return nil, fmt.Errorf("%s %s index %s: %w", op, t.g.name, index, err)
	}
	t.mu.Lock()
	keys := slices.SortedFunc(maps.Keys(t.idx[index][v]), compareKeyPair)
	out := make([]map[string]types.AttributeValue, len(keys))
	for j, k := range keys {
		stored := t.items[k[0]][k[1]].item
		out[j] = t.keyOf(stored)
		out[j][attr] = cloneValue(stored[attr])
	}
	t.mu.Unlock()
	t.afterCall(ctx, op)
	return out, nil
}

func compareKeyPair(a, b [2]string) int {
	if c := compareKeys(a[0], b[0]); c != 0 {
		return c
	}
	return compareKeys(a[1], b[1])
}

// liveKeys returns the keys of the items (no tombstones) in order. The
// caller holds t.mu.
func (t *Table) liveKeys() [][2]string {
	var keys [][2]string
	for h, rs := range t.items {
		for r, e := range rs {
			if e.item != nil {
				keys = append(keys, [2]string{h, r})
			}
		}
	}
	slices.SortFunc(keys, compareKeyPair)
	return keys
}

func (t *Table) keyOf(item map[string]types.AttributeValue) map[string]types.AttributeValue {
	k := map[string]types.AttributeValue{t.g.key.HashKey: cloneValue(item[t.g.key.HashKey])}
	if t.g.key.RangeKey != "" {
		k[t.g.key.RangeKey] = cloneValue(item[t.g.key.RangeKey])
	}
	return k
}

// Snapshot returns a deep copy of the replica's items in key order; two
// snapshots compare with reflect.DeepEqual.
func (t *Table) Snapshot() []map[string]types.AttributeValue {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.liveKeys()
	out := make([]map[string]types.AttributeValue, len(keys))
	for i, k := range keys {
		out[i] = cloneItem(t.items[k[0]][k[1]].item)
	}
	return out
}

// Len returns the number of items in the replica.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.liveKeys())
}

func cloneItem(item map[string]types.AttributeValue) map[string]types.AttributeValue {
	if item == nil {
		return nil
	}
	out := make(map[string]types.AttributeValue, len(item))
	for k, v := range item {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(av types.AttributeValue) types.AttributeValue {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return &types.AttributeValueMemberS{Value: v.Value}
	case *types.AttributeValueMemberN:
		return &types.AttributeValueMemberN{Value: v.Value}
	case *types.AttributeValueMemberB:
		return &types.AttributeValueMemberB{Value: bytes.Clone(v.Value)}
	case *types.AttributeValueMemberBOOL:
		return &types.AttributeValueMemberBOOL{Value: v.Value}
	case *types.AttributeValueMemberNULL:
		return &types.AttributeValueMemberNULL{Value: v.Value}
	case *types.AttributeValueMemberSS:
		return &types.AttributeValueMemberSS{Value: slices.Clone(v.Value)}
	case *types.AttributeValueMemberNS:
		return &types.AttributeValueMemberNS{Value: slices.Clone(v.Value)}
	case *types.AttributeValueMemberBS:
		bs := make([][]byte, len(v.Value))
		for i, b := range v.Value {
			bs[i] = bytes.Clone(b)
		}
		return &types.AttributeValueMemberBS{Value: bs}
	case *types.AttributeValueMemberL:
		l := make([]types.AttributeValue, len(v.Value))
		for i, e := range v.Value {
			l[i] = cloneValue(e)
		}
		return &types.AttributeValueMemberL{Value: l}
	case *types.AttributeValueMemberM:
		return &types.AttributeValueMemberM{Value: cloneItem(v.Value)}
	default:
		return av
	}
}

// emit builds the stream record of a change and hands it to the
// subscribers. The caller holds t.mu.
func (t *Table) emit(old, item map[string]types.AttributeValue, who *events.DynamoDBUserIdentity) {
	name := "MODIFY"
	switch {
	case old == nil:
		name = "INSERT"
	case item == nil:
		name = "REMOVE"
	}
	img := item
	if img == nil {
		img = old
	}
	keys, err := ddbitem.ToStreamImage(t.keyOf(img))
	if err != nil {
		panic("memddb: stored key cannot be converted: " + err.Error()) // keys are S, N or B by construction
	}
	t.seq++
	rec := events.DynamoDBEventRecord{
		AWSRegion:      t.region,
		EventID:        newEventID(),
		EventName:      name,
		EventSource:    "aws:dynamodb",
		EventVersion:   "1.1",
		EventSourceArn: t.StreamARN(),
		UserIdentity:   who,
		Change: events.DynamoDBStreamRecord{
			ApproximateCreationDateTime: events.SecondsEpochTime{Time: t.g.now().UTC().Truncate(time.Second)},
			Keys:                        keys,
			SequenceNumber:              sequenceNumber(t.seq),
			StreamViewType:              t.g.view,
		},
	}
	size := itemSize(t.keyOf(img))
	if t.g.view == ViewNewImage || t.g.view == ViewNewAndOldImages {
		rec.Change.NewImage = mustImage(item)
		size += itemSize(item)
	}
	if t.g.view == ViewOldImage || t.g.view == ViewNewAndOldImages {
		rec.Change.OldImage = mustImage(old)
		size += itemSize(old)
	}
	rec.Change.SizeBytes = int64(size)
	t.log = append(t.log, rec)
	// Trimmed in one copy once it holds twice the cap, not by one shift
	// per write: amortized O(1) per record, and the most recent
	// streamLogCap records are always there.
	if len(t.log) >= 2*streamLogCap {
		t.log = append([]events.DynamoDBEventRecord(nil), t.log[len(t.log)-streamLogCap:]...)
	}
	d := delivery{rec: rec}
	if t.g.j != nil && t.g.durableStream {
		d.seq = t.seq
		b, err := json.Marshal(rec)
		if err != nil {
			panic("memddb: stream record cannot be journaled: " + err.Error()) // its images converted above
		}
		t.jops = append(t.jops, journal.Put(t.buckets.stream, journal.SeqKey(uint64(d.seq)), b))
		if len(t.subs) == 0 {
			t.backlog = append(t.backlog, d)
			return
		}
		t.undelivered[d.seq] = len(t.subs)
	}
	for _, s := range t.subs {
		s.push(d)
	}
}

// mustImage converts a stored item; stored items hold only SDK member types,
// which all convert.
func mustImage(item map[string]types.AttributeValue) map[string]events.DynamoDBAttributeValue {
	img, err := ddbitem.ToStreamImage(item)
	if err != nil {
		panic("memddb: stored item cannot be converted: " + err.Error())
	}
	return img
}

func newEventID() string {
	// math/rand/v2's runtime source (ChaCha8): an id, not a secret, and no
	// system call per write.
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// sequenceNumber formats a stream record's sequence number as %021d does,
// without fmt's cost on every write.
func sequenceNumber(seq int64) string {
	var b [21]byte
	for i := range b {
		b[i] = '0'
	}
	d := strconv.AppendInt(nil, seq, 10)
	if len(d) >= len(b) {
		return string(d)
	}
	copy(b[len(b)-len(d):], d)
	return string(b[:])
}

// itemSize approximates DynamoDB's item size: attribute names plus values.
func itemSize(item map[string]types.AttributeValue) int {
	n := 0
	for k, v := range item {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(av types.AttributeValue) int {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return (len(v.Value)+1)/2 + 1
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		n := 0
		for _, s := range v.Value {
			n += len(s)
		}
		return n
	case *types.AttributeValueMemberNS:
		n := 0
		for _, s := range v.Value {
			n += (len(s)+1)/2 + 1
		}
		return n
	case *types.AttributeValueMemberBS:
		n := 0
		for _, b := range v.Value {
			n += len(b)
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + valueSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		return 3 + itemSize(v.Value) + len(v.Value)
	}
	return 0
}

// ExpireTTL deletes the items of this replica whose attribute attr (DynamoDB's
// TTL attribute: a number of epoch seconds) is before now, as DynamoDB's TTL
// process does: each deletion emits a REMOVE record whose userIdentity is the
// DynamoDB service, and reaches the other replicas like any delete. Items
// without the attribute, or whose attribute is not a number, never expire.
// It returns the number of items deleted.
func (t *Table) ExpireTTL(attr string, now time.Time) int {
	if t.g.isClosed() {
		return 0
	}
	who := &events.DynamoDBUserIdentity{Type: "Service", PrincipalID: "dynamodb.amazonaws.com"}
	t.mu.Lock()
	defer func() {
		wait := t.appendJournal()
		t.mu.Unlock()
		_ = journaled(wait) // no caller to tell: a lost deletion expires again
	}()
	deleted := 0
	for _, k := range t.liveKeys() {
		if !expired(t.items[k[0]][k[1]].item[attr], now) {
			continue
		}
		if err := t.writeLocked(k[0], k[1], func(map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
			return nil, nil
		}, who); err == nil {
			deleted++
		}
	}
	return deleted
}

func expired(av types.AttributeValue, now time.Time) bool {
	v, ok := av.(*types.AttributeValueMemberN)
	if !ok {
		return false
	}
	f, ok := new(big.Float).SetString(v.Value)
	if !ok {
		return false
	}
	sec, _ := f.Int64()
	return sec < now.Unix()
}

// Records returns the replica's most recent stream records (up to
// streamLogCap, 10000), oldest first.
func (t *Table) Records() []events.DynamoDBEventRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.log[max(len(t.log)-streamLogCap, 0):])
}

// StreamSince returns the replica's stream records after sequence number
// seq (0: every record kept), oldest first, and the sequence number of the
// newest record: a reader without a goroutine (WithManualReplication).
func (t *Table) StreamSince(seq int64) ([]events.DynamoDBEventRecord, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seq <= seq {
		return nil, t.seq
	}
	first := max(len(t.log)-int(t.seq-seq), 0) // trimmed: what is left
	return slices.Clone(t.log[first:]), t.seq
}

// delivery is a record on its way to a subscriber; seq is its key in the
// journal (0: not journaled).
type delivery struct {
	rec events.DynamoDBEventRecord
	seq int64
}

// subscriber delivers a replica's records to fn in order, on its own goroutine.
type subscriber struct {
	t      *Table
	g      *GlobalTable
	region string
	fn     func(events.DynamoDBEventRecord)
	mu     sync.Mutex
	q      []delivery
	held   int // records of q held while the replica is paused
	closed bool
	wake   chan struct{}
	quit   chan struct{}
}

// Subscribe calls fn with each stream record of this replica written from
// now on, in order, on a goroutine of its own (a slow fn delays only its own
// records, never the writers). The returned function stops the delivery;
// records not yet delivered are dropped (from memory: a durable stream's
// journal keeps them for the next Restore).
func (t *Table) Subscribe(fn func(events.DynamoDBEventRecord)) (unsubscribe func()) {
	s := &subscriber{t: t, g: t.g, region: t.region, fn: fn, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	t.mu.Lock()
	t.subs = append(t.subs, s)
	for _, d := range t.backlog {
		t.undelivered[d.seq]++
		s.push(d)
	}
	t.backlog = nil
	t.mu.Unlock()
	go s.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			t.subs = slices.DeleteFunc(t.subs, func(x *subscriber) bool { return x == s })
			t.mu.Unlock()
			s.mu.Lock()
			s.closed = true
			n, held := len(s.q), s.held
			s.q, s.held = nil, 0
			s.mu.Unlock()
			t.g.dropHeld(held)
			t.g.done(n - held)
			close(s.quit)
		})
	}
}

func (s *subscriber) push(d delivery) {
	s.mu.Lock()
	held := s.g.isHeld(s.region, s.region)
	if s.closed || !s.g.addQueued(held) {
		s.mu.Unlock()
		return
	}
	s.q = append(s.q, d)
	if held {
		s.held++
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) run() {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		if len(s.q) == 0 || s.held > 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-s.quit:
				return
			case <-s.g.stop:
				return
			}
		}
		d := s.q[0]
		s.q[0] = delivery{}
		s.q = s.q[1:]
		s.mu.Unlock()
		s.fn(d.rec)
		if d.seq != 0 {
			s.t.delivered(d.seq)
		}
		s.g.done(1)
	}
}

// delivered notes that a subscriber delivered journaled record seq; the
// last one removes it from the journal.
func (t *Table) delivered(seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.undelivered[seq]; n > 1 {
		t.undelivered[seq] = n - 1
		return
	}
	delete(t.undelivered, seq)
	t.jops = append(t.jops, journal.Delete(t.buckets.stream, journal.SeqKey(uint64(seq))))
	_ = t.appendJournal() // nothing waits: a record delivered twice is at least once
}
