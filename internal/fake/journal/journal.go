// Package journal is the small port through which the in-memory fakes
// (memddb, memiot) and the local stack's invocation queues keep their state
// in a durable store: a write-through journal of key/value changes grouped
// in buckets. The fakes journal nothing unless they are given a Journal, so
// the tests and the deterministic simulation run as before; `mriot local`
// gives them one backed by a file (internal/emulator/store).
//
// A Journal applies the groups of changes appended to it in the order they
// were appended, each group atomically. Append never blocks on I/O: a fake
// appends under its own lock (so the journal's order is the order of its
// changes) and waits for durability, when it must, after releasing it.
package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Op is one change: Value nil deletes Key from Bucket, anything else
// (an empty slice included) puts it.
type Op struct {
	Bucket string
	Key    []byte
	Value  []byte
}

// Put is the Op that stores value (never nil: an empty value is stored as
// such) under key in bucket.
func Put(bucket string, key, value []byte) Op {
	if value == nil {
		value = []byte{}
	}
	return Op{Bucket: bucket, Key: key, Value: value}
}

// Delete is the Op that removes key from bucket.
func Delete(bucket string, key []byte) Op { return Op{Bucket: bucket, Key: key} }

// Journal keeps changes durably.
type Journal interface {
	// Append queues ops to be applied atomically, after every group appended
	// before them. It takes ownership of ops and their bytes and never
	// blocks on I/O. The returned function waits until the group is durable
	// and returns the store's error if it cannot be; the caller need not
	// call it (a change whose loss in a crash is harmless, because what
	// made it is journaled too, need not wait).
	Append(ops ...Op) (wait func() error)
	// Scan calls fn with every key and value of bucket in key order (none
	// when the bucket does not exist); fn's error stops the scan and is
	// returned. The slices are valid only during the call.
	Scan(bucket string, fn func(key, value []byte) error) error
}

// Memory is a Journal held in memory, for the fakes' tests: it outlives the
// fakes that journal into it, as a file outlives a process. Append applies
// at once.
type Memory struct {
	mu      sync.Mutex
	buckets map[string]map[string][]byte
	appends int
	err     error
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{buckets: map[string]map[string][]byte{}} }

// Append implements Journal. After Fail, nothing is applied and wait
// returns the error.
func (m *Memory) Append(ops ...Op) func() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err; err != nil {
		return func() error { return err }
	}
	m.appends++
	for _, op := range ops {
		b := m.buckets[op.Bucket]
		if op.Value == nil {
			delete(b, string(op.Key))
			continue
		}
		if b == nil {
			b = map[string][]byte{}
			m.buckets[op.Bucket] = b
		}
		b[string(op.Key)] = bytes.Clone(op.Value)
	}
	return func() error { return nil }
}

// Scan implements Journal.
func (m *Memory) Scan(bucket string, fn func(key, value []byte) error) error {
	m.mu.Lock()
	b := maps.Clone(m.buckets[bucket])
	m.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if err := fn([]byte(k), b[k]); err != nil {
			return err
		}
	}
	return nil
}

// Fail makes every later Append fail with err (a full disk).
func (m *Memory) Fail(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}

// Len is the number of keys in bucket.
func (m *Memory) Len(bucket string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets[bucket])
}

// Buckets returns the names of the buckets that hold keys, sorted.
func (m *Memory) Buckets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, b := range m.buckets {
		if len(b) > 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Appends is the number of groups appended (the commits a file store would
// make, before batching).
func (m *Memory) Appends() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.appends
}

// Set puts value under key in bucket directly, bypassing Fail: a test's way
// to plant a corrupt record.
func (m *Memory) Set(bucket string, key, value []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.buckets[bucket] == nil {
		m.buckets[bucket] = map[string][]byte{}
	}
	m.buckets[bucket][string(key)] = bytes.Clone(value)
}

// ErrCorrupt marks a stored record that does not decode: the store was
// written by another version, or damaged.
var ErrCorrupt = errors.New("stored state does not decode")

// SeqKey is the key of sequence number n: 8 bytes, big-endian, so that keys
// sort as the numbers do.
func SeqKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// ParseSeqKey is the sequence number of a SeqKey; another length is
// ErrCorrupt.
func ParseSeqKey(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("sequence key of %d bytes, want 8: %w", len(k), ErrCorrupt)
	}
	return binary.BigEndian.Uint64(k), nil
}
