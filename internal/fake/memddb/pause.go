package memddb

import (
	"fmt"
	"slices"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Pause cuts the replica of region off from the other replicas, as a region
// outage does to a DynamoDB global table: until Resume, no replication
// reaches it and none of its own writes reaches the others (each waits in
// its queue, in order), and its stream records are not delivered to its
// subscribers (they wait too). The replica itself still answers calls, as a
// table answers the clients of its own region; stopping those is the
// caller's business (the local stack runs nothing in a region that is down).
// Work held by a paused replica does not count for WaitIdle and Flush. A
// replication or delivery already under way when Pause is called completes.
// An unknown region is fleet.ErrNotFound.
func (g *GlobalTable) Pause(region string) error { return g.setPaused(region, true) }

// Resume reconnects a paused replica: what queued for it and what it queued
// for the others is applied in arrival order, each replication last writer
// wins by its write's timestamp (as DynamoDB resolves concurrent writes
// made in different regions), and its held stream records are delivered,
// followed by those of the replications it now receives. Resuming a
// replica that is not paused does nothing.
func (g *GlobalTable) Resume(region string) error { return g.setPaused(region, false) }

// Paused reports whether region's replica is paused.
func (g *GlobalTable) Paused(region string) bool { return g.isHeld(region, region) }

// Held is the number of replications and stream records waiting for a
// paused replica.
func (g *GlobalTable) Held() int {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.held
}

func (g *GlobalTable) setPaused(region string, paused bool) error {
	if g.replicas[region] == nil {
		return fmt.Errorf("table %s has no replica in %s: %w", g.name, region, fleet.ErrNotFound)
	}
	g.pmu.Lock()
	if g.paused[region] == paused {
		g.pmu.Unlock()
		return nil
	}
	if paused {
		if g.paused == nil {
			g.paused = map[string]bool{}
		}
		g.paused[region] = true
	} else {
		delete(g.paused, region)
	}
	g.pmu.Unlock()
	g.reclassify()
	return nil
}

// isHeld reports whether a replication from origin into receiver waits (one
// of the two replicas is paused); isHeld(r, r) is whether r is paused.
func (g *GlobalTable) isHeld(receiver, origin string) bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.paused[receiver] || g.paused[origin]
}

// addQueued counts one queued replication or stream record: as pending
// work, or as held when a paused replica holds it. False once the table is
// closed.
func (g *GlobalTable) addQueued(held bool) bool {
	if !held {
		return g.add(1)
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if g.closed {
		return false
	}
	g.held++
	return true
}

// dropHeld forgets n held units (a subscriber that went away).
func (g *GlobalTable) dropHeld(n int) {
	if n == 0 {
		return
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if !g.closed {
		g.held -= n
	}
}

// moveHeld moves delta units from pending to held (a negative delta: from
// held back to pending).
func (g *GlobalTable) moveHeld(delta int) {
	if delta == 0 {
		return
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if g.closed {
		return
	}
	g.held += delta
	was := g.pending
	g.pending -= delta
	switch {
	case was == 0 && g.pending > 0:
		g.idle = make(chan struct{})
	case was > 0 && g.pending == 0:
		close(g.idle)
	}
}

// reclassify marks, after a Pause or Resume, which queued replications and
// stream records wait, moves their count between pending and held, and
// wakes the replicators and subscribers that may go on. Each queue is
// classified under its own lock, where its writers look at the paused
// regions too, so that nothing is counted twice or lost.
func (g *GlobalTable) reclassify() {
	for _, r := range g.regions {
		t := g.replicas[r]
		t.rmu.Lock()
		delta := 0
		for i := range t.rq {
			held := g.isHeld(t.region, t.rq[i].origin)
			if held == t.rq[i].held {
				continue
			}
			t.rq[i].held = held
			if held {
				delta++
			} else {
				delta--
			}
		}
		g.moveHeld(delta)
		t.rmu.Unlock()
		t.poke()

		t.mu.Lock()
		subs := slices.Clone(t.subs)
		t.mu.Unlock()
		for _, s := range subs {
			s.mu.Lock()
			want := 0
			if !s.closed && g.isHeld(t.region, t.region) {
				want = len(s.q)
			}
			if !s.closed {
				g.moveHeld(want - s.held)
				s.held = want
			}
			s.mu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// nextLocked is the index of the oldest replication in t's queue that is
// not held (-1: none). The caller holds t.rmu.
func (t *Table) nextLocked() int {
	if len(t.rq) > 0 && !t.rq[0].held {
		return 0
	}
	if t.g.Paused(t.region) {
		return -1 // everything here waits: no need to look through it
	}
	return slices.IndexFunc(t.rq, func(r replication) bool { return !r.held })
}

// takeLocked removes the replication at index i of t's queue. The caller
// holds t.rmu.
func (t *Table) takeLocked(i int) {
	if i == 0 {
		t.rq[0] = replication{}
		t.rq = t.rq[1:]
		return
	}
	t.rq = slices.Delete(t.rq, i, i+1)
}
