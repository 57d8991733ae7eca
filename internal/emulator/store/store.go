// Package store keeps the local stack's state in one file: a
// journal.Journal on go.etcd.io/bbolt, an embedded, pure-Go, single-file
// B+tree store with ACID transactions.
//
// Writes are group-committed by one goroutine: every group appended while a
// transaction commits goes into the next one. A group someone waits for is
// committed as soon as the previous transaction is done, with no timer
// (unlike bbolt's DB.Batch, which waits up to MaxBatchDelay for company);
// groups nobody waits for (a change whose loss in a crash is harmless, such
// as a replicated copy whose outbox entry stays until it commits) linger up
// to Options.Linger for one that is waited for and go in its transaction.
// So a thousand concurrent writers share a handful of commits, and a lone
// device's publish costs one commit however many changes it causes. Each
// commit is written and, unless Options.NoSync, fsynced before the waiters
// are released, so what a waiter was told is durable survives a kill -9 and
// a power cut alike.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/fake/journal"
)

// FormatVersion is the layout of the buckets this version writes. A file of
// another version is refused at Open (ErrFormat) rather than misread.
const FormatVersion = "1"

const (
	metaBucket = "meta"
	versionKey = "format"
)

// ErrClosed is returned by the waits of groups appended after Close.
var ErrClosed = errors.New("state store closed")

// ErrFormat marks a file written in another layout.
var ErrFormat = errors.New("state store has another format version")

// ErrLocked marks a file another process holds open.
var ErrLocked = errors.New("state store is in use by another process")

// Options tune a Store.
type Options struct {
	// NoSync skips the fsync of each commit: a commit is then in the
	// operating system's cache when its waiters are released, which
	// survives the process being killed but not the machine losing power.
	NoSync bool
	// LockTimeout is how long Open waits for another process to release
	// the file (default 1s).
	LockTimeout time.Duration
	// Linger is how long changes nobody waits for may wait for one that is
	// waited for before they are committed on their own (default 5ms).
	Linger time.Duration
	// Log receives commit failures (default: discarded).
	Log *slog.Logger
}

// Store is a Journal in a bbolt file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	log  *slog.Logger

	mu     sync.Mutex
	cur    *group
	closed bool
	err    error         // the first commit failure: every later group fails with it
	wake   chan struct{} // something was appended; closed by Close
	urgent chan struct{} // someone waits for the group being collected
	quit   chan struct{} // closed by Close: no lingering
	exited chan struct{}
	linger time.Duration

	commits, ops atomic.Int64
}

// group is the changes of one transaction and the waiters' signal.
type group struct {
	ops  []journal.Op
	done chan struct{}
	err  error
}

func newGroup() *group { return &group{done: make(chan struct{})} }

// Open opens or creates the store file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.Linger <= 0 {
		opts.Linger = 5 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = obs.Discard()
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout, NoSync: opts.NoSync,
		// The freelist is rebuilt by a scan at open instead of being
		// written at every commit, and kept as a map: the write path
		// of bbolt's own benchmarks for write-heavy use.
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: %w (is another mriot local running with this --state-dir?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	if err := checkFormat(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &Store{db: db, path: path, log: opts.Log, cur: newGroup(), linger: opts.Linger,
		wake: make(chan struct{}, 1), urgent: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
	go s.writer()
	return s, nil
}

// checkFormat stamps a new file with FormatVersion and refuses a file of
// another.
func checkFormat(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		switch v := b.Get([]byte(versionKey)); {
		case v == nil:
			return b.Put([]byte(versionKey), []byte(FormatVersion))
		case string(v) != FormatVersion:
			return fmt.Errorf("%w: the file is version %q, this mriot reads %q", ErrFormat, v, FormatVersion)
		}
		return nil
	})
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// Append implements journal.Journal.
func (s *Store) Append(ops ...journal.Op) func() error {
	s.mu.Lock()
	if s.closed || s.err != nil {
		err := s.err
		if err == nil {
			err = ErrClosed
		}
		s.mu.Unlock()
		return func() error { return err }
	}
	g := s.cur
	g.ops = append(g.ops, ops...)
	select {
	case s.wake <- struct{}{}:
	default: // the writer is woken already
	}
	s.mu.Unlock()
	return func() error {
		select {
		case <-g.done:
			return g.err
		default:
		}
		select {
		case s.urgent <- struct{}{}:
		default: // the writer is hurried already
		}
		<-g.done
		return g.err
	}
}

// writer commits the collected groups one transaction at a time, until
// Close closes wake (then it commits what is left and returns).
func (s *Store) writer() {
	defer close(s.exited)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		_, open := <-s.wake
		if open {
			// Commit when someone waits, or when the changes have
			// lingered long enough.
			linger.Reset(s.linger)
			select {
			case <-s.urgent:
			case <-linger.C:
			case <-s.quit:
			}
			linger.Stop()
		}
		s.mu.Lock()
		g := s.cur
		s.cur = newGroup()
		s.mu.Unlock()
		if len(g.ops) > 0 {
			g.err = s.commit(g.ops)
			if g.err != nil {
				s.log.Error("state store commit failed; later changes are not kept", "path", s.path, "error", g.err.Error())
				s.mu.Lock()
				if s.err == nil {
					s.err = g.err
				}
				s.mu.Unlock()
			}
		}
		close(g.done)
		if !open {
			return
		}
	}
}

func (s *Store) commit(ops []journal.Op) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		buckets := map[string]*bolt.Bucket{}
		for _, op := range ops {
			b, ok := buckets[op.Bucket]
			if !ok {
				if op.Value == nil {
					b = tx.Bucket([]byte(op.Bucket))
				} else {
					var err error
					if b, err = tx.CreateBucketIfNotExists([]byte(op.Bucket)); err != nil {
						return fmt.Errorf("bucket %q: %w", op.Bucket, err)
					}
				}
				buckets[op.Bucket] = b
			}
			if op.Value == nil {
				if b == nil {
					continue // nothing to delete
				}
				if err := b.Delete(op.Key); err != nil {
					return fmt.Errorf("delete %q from %q: %w", op.Key, op.Bucket, err)
				}
				continue
			}
			if b == nil {
				// Deleted from a bucket that did not exist, then put.
				var err error
				if b, err = tx.CreateBucketIfNotExists([]byte(op.Bucket)); err != nil {
					return fmt.Errorf("bucket %q: %w", op.Bucket, err)
				}
				buckets[op.Bucket] = b
			}
			if err := b.Put(op.Key, op.Value); err != nil {
				return fmt.Errorf("put %q in %q: %w", op.Key, op.Bucket, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit to %s: %w", s.path, err)
	}
	s.commits.Add(1)
	s.ops.Add(int64(len(ops)))
	return nil
}

// Scan implements journal.Journal. It reads what is committed.
func (s *Store) Scan(bucket string, fn func(key, value []byte) error) error {
	if bucket == metaBucket {
		return fmt.Errorf("scan %q: the bucket is the store's own", bucket)
	}
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(fn)
	})
}

// Stats are a store's counters since Open.
type Stats struct {
	Commits, Ops int64
}

// Stats returns the transactions committed and the changes they held.
func (s *Store) Stats() Stats { return Stats{Commits: s.commits.Load(), Ops: s.ops.Load()} }

// Close commits what was appended before it and closes the file. Groups
// appended afterwards fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.exited
		return nil
	}
	s.closed = true
	close(s.wake) // under mu: no Append is sending
	close(s.quit)
	s.mu.Unlock()
	<-s.exited
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state %s: %w", s.path, err)
	}
	return nil
}
