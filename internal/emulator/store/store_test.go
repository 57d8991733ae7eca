package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mriot/mriot/internal/fake/journal"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// contents is every key=value of bucket, in order.
func contents(t *testing.T, j journal.Journal, bucket string) []string {
	t.Helper()
	var out []string
	if err := j.Scan(bucket, func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAppendAndScan(t *testing.T) {
	put := func(b, k, v string) journal.Op { return journal.Put(b, []byte(k), []byte(v)) }
	del := func(b, k string) journal.Op { return journal.Delete(b, []byte(k)) }
	for _, tc := range []struct {
		name   string
		groups [][]journal.Op
		bucket string
		want   []string
	}{
		{"puts come back in key order", [][]journal.Op{{put("a", "k2", "2"), put("a", "k1", "1")}, {put("a", "k3", "3")}}, "a", []string{"k1=1", "k2=2", "k3=3"}},
		{"a later group wins", [][]journal.Op{{put("a", "k", "old")}, {put("a", "k", "new")}}, "a", []string{"k=new"}},
		{"delete after put", [][]journal.Op{{put("a", "k", "v")}, {del("a", "k")}}, "a", nil},
		{"put and delete in one group, in order", [][]journal.Op{{put("a", "k", "v"), del("a", "k"), put("a", "j", "w")}}, "a", []string{"j=w"}},
		{"delete from a bucket that does not exist", [][]journal.Op{{del("nowhere", "k")}, {put("b", "k", "v")}}, "nowhere", nil},
		{"delete then put in a new bucket", [][]journal.Op{{del("c", "k"), put("c", "k", "v")}}, "c", []string{"k=v"}},
		{"an empty value is kept", [][]journal.Op{{journal.Put("a", []byte("k"), nil)}}, "a", []string{"k="}},
		{"buckets are apart", [][]journal.Op{{put("a", "k", "1"), put("b", "k", "2")}}, "b", []string{"k=2"}},
		{"an unknown bucket is empty", nil, "x", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "state.db"))
			var waits []func() error
			for _, g := range tc.groups {
				waits = append(waits, s.Append(g...))
			}
			for _, w := range waits {
				if err := w(); err != nil {
					t.Fatal(err)
				}
			}
			if got := contents(t, s, tc.bucket); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("bucket %s = %v, want %v", tc.bucket, got, tc.want)
			}
		})
	}
}

func TestReopenKeepsWhatWasWaitedFor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(journal.Put("a", []byte("k"), []byte("v")))(); err != nil {
		t.Fatal(err)
	}
	// Appended, not waited for: Close commits it.
	s.Append(journal.Put("a", []byte("later"), []byte("w")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(journal.Put("a", []byte("x"), []byte("y")))(); !errors.Is(err, ErrClosed) {
		t.Errorf("append after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s2 := open(t, path)
	if got := contents(t, s2, "a"); fmt.Sprint(got) != "[k=v later=w]" {
		t.Errorf("after reopening: %v", got)
	}
}

// TestGroupCommit: groups appended while a commit runs share the next one.
func TestGroupCommit(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	const n = 1000
	waits := make([]func() error, n)
	for i := range n {
		waits[i] = s.Append(journal.Put("a", journal.SeqKey(uint64(i)), []byte("v")))
	}
	for _, w := range waits {
		if err := w(); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	t.Logf("%d groups in %d commits", n, st.Commits)
	if st.Ops != n {
		t.Errorf("%d ops committed, want %d", st.Ops, n)
	}
	// Each commit fsyncs (hundreds of µs at least); the loop appends in
	// microseconds: one commit per group would mean no batching.
	if st.Commits >= n/10 {
		t.Errorf("%d groups took %d commits: no group commit", n, st.Commits)
	}
	// Concurrent writers that each wait, as the fakes do.
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if err := s.Append(journal.Put("b", journal.SeqKey(uint64(i)), []byte("v")))(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := len(contents(t, s, "b")); got != 200 {
		t.Errorf("%d of 200 concurrent puts kept", got)
	}
}

func TestAFailedCommitFailsItsWaitersAndLaterGroups(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	// bbolt refuses an empty key: the commit fails.
	if err := s.Append(journal.Put("a", nil, []byte("v")))(); err == nil {
		t.Fatal("a commit bbolt refuses succeeded")
	}
	err := s.Append(journal.Put("a", []byte("k"), []byte("v")))()
	if err == nil {
		t.Fatal("a group appended after a failed commit succeeded")
	}
	if got := contents(t, s, "a"); len(got) != 0 {
		t.Errorf("kept after the failure: %v", got)
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Run("a file another open holds", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		open(t, path)
		if s, err := Open(path, Options{LockTimeout: 50e6}); !errors.Is(err, ErrLocked) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("second open: %v, want ErrLocked", err)
		}
	})
	t.Run("another format version", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists([]byte(metaBucket))
			return b.Put([]byte(versionKey), []byte("999"))
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if s, err := Open(path, Options{}); !errors.Is(err, ErrFormat) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("open: %v, want ErrFormat", err)
		}
	})
	t.Run("a file that is not a store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		if err := writeFile(path, []byte("not a bbolt file, not at all; long enough to hold a page header and more")); err != nil {
			t.Fatal(err)
		}
		if s, err := Open(path, Options{}); err == nil {
			s.Close()
			t.Fatal("opened a file that is not a store")
		}
	})
	t.Run("the meta bucket", func(t *testing.T) {
		s := open(t, filepath.Join(t.TempDir(), "state.db"))
		if err := s.Scan(metaBucket, func(_, _ []byte) error { return nil }); err == nil {
			t.Error("scanned the store's own bucket")
		}
	})
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

// TestLinger: changes nobody waits for wait for company (up to Linger),
// and a waiter's commit takes them along at once.
func TestLinger(t *testing.T) {
	put := func(k string) journal.Op { return journal.Put("a", []byte(k), []byte("v")) }
	t.Run("a waiter does not linger", func(t *testing.T) {
		s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{Linger: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.Append(put("lazy"))
		done := make(chan error, 1)
		go func() { done <- s.Append(put("waited"))() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a waited-for group lingered")
		}
		if st := s.Stats(); st.Commits != 1 || st.Ops != 2 {
			t.Errorf("%+v: want the lazy change in the waiter's commit", st)
		}
	})
	t.Run("changes nobody waits for are committed after Linger", func(t *testing.T) {
		s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{Linger: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.Append(put("lazy"))
		deadline := time.Now().Add(30 * time.Second)
		for s.Stats().Commits == 0 {
			if time.Now().After(deadline) {
				t.Fatal("a change nobody waits for was never committed")
			}
			time.Sleep(time.Millisecond)
		}
	})
	t.Run("Close does not linger", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		s, err := Open(path, Options{Linger: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s.Append(put("lazy"))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := open(t, path)
		if got := contents(t, s2, "a"); len(got) != 1 {
			t.Errorf("after Close: %v", got)
		}
	})
}

// BenchmarkCommit is a lone writer's commit of one small change, with and
// without fsync: the floor under every waited-for change.
//
//	go test -run '^$' -bench BenchmarkCommit ./internal/emulator/store
func BenchmarkCommit(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		b.Run(map[bool]string{false: "fsync", true: "nosync"}[noSync], func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var i uint64
			for b.Loop() {
				i++
				if err := s.Append(journal.Put("a", journal.SeqKey(i), []byte(`{"message": "a small change"}`)))(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
