package sim

import (
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	cases := []struct {
		name string
		in   []time.Duration
		want Latency
	}{
		{"empty", nil, Latency{}},
		{"one", ms(7), Latency{7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond}},
		{"two", ms(9, 3), Latency{3 * time.Millisecond, 9 * time.Millisecond, 9 * time.Millisecond}},
		{"hundred", ms(hundred...), Latency{50 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond}},
	}
	for _, tc := range cases {
		if got := percentiles(tc.in); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestReasonsAreBounded(t *testing.T) {
	var r reasons
	for i := range maxReasons + 5 {
		r.add(string(rune('a' + i)))
	}
	r.add("a")
	got := r.snapshot()
	if len(got) != maxReasons+1 || got["(other)"] != 5 || got["a"] != 2 {
		t.Fatalf("reasons %v", got)
	}
}
