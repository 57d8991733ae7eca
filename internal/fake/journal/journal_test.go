package journal

import (
	"errors"
	"slices"
	"testing"
)

func TestSeqKey(t *testing.T) {
	for _, n := range []uint64{0, 1, 255, 256, 1 << 40, ^uint64(0)} {
		got, err := ParseSeqKey(SeqKey(n))
		if err != nil || got != n {
			t.Errorf("ParseSeqKey(SeqKey(%d)) = %d, %v", n, got, err)
		}
	}
	// Keys sort as the numbers do: bbolt scans them in order.
	if string(SeqKey(255)) >= string(SeqKey(256)) {
		t.Error("SeqKey(255) sorts after SeqKey(256)")
	}
	for _, bad := range [][]byte{nil, {1}, make([]byte, 9)} {
		if _, err := ParseSeqKey(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseSeqKey(%x): %v, want ErrCorrupt", bad, err)
		}
	}
}

func TestMemory(t *testing.T) {
	m := NewMemory()
	if err := m.Append(Put("b", []byte("k2"), []byte("2")), Put("b", []byte("k1"), nil), Delete("none", []byte("k")))(); err != nil {
		t.Fatal(err)
	}
	var got []string
	_ = m.Scan("b", func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	})
	// An empty value is a put, not a delete.
	if want := []string{"k1=", "k2=2"}; !slices.Equal(got, want) {
		t.Errorf("Scan = %v, want %v", got, want)
	}
	m.Append(Delete("b", []byte("k2")))
	if m.Len("b") != 1 || m.Appends() != 2 || !slices.Equal(m.Buckets(), []string{"b"}) {
		t.Errorf("Len %d, Appends %d, Buckets %v", m.Len("b"), m.Appends(), m.Buckets())
	}
	stop := errors.New("stop")
	if err := m.Scan("b", func(_, _ []byte) error { return stop }); err != stop {
		t.Errorf("Scan returned %v, want fn's error", err)
	}
	m.Fail(errors.New("disk full"))
	if err := m.Append(Put("b", []byte("x"), []byte("y")))(); err == nil || m.Len("b") != 1 {
		t.Errorf("Append after Fail: %v, %d keys", err, m.Len("b"))
	}
}
