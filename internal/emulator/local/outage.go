package local

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/workflow/api"
)

// A region outage, as the local stack plays it (SetRegionDown): the region's
// data endpoint refuses connections and the global endpoint routes around
// it; its replicas of the global tables neither send nor receive
// replication (memddb's Pause); its stream consumers and its functions run
// nothing (what is queued for them waits); its registry cannot be reached
// from the HTTP API; and the API, which reads the inventory and the data
// table from the primary region's replicas, reads them from the first
// region that is up. Bringing it back replays what waited, in order.

// outageState is a region's outage switch.
type outageState struct {
	mu   sync.Mutex // serializes SetRegionDown calls for the region
	down atomic.Bool
}

// Down reports whether the region is down (SetRegionDown, --down).
func (r *Region) Down() bool { return r.outage.down.Load() }

// invokers are the region's functions that events invoke.
func (r *Region) invokers() []*Invoker {
	out := []*Invoker{r.jitr, r.replicate, r.ingest}
	if r.presence != nil {
		out = append(out, r.presence)
	}
	if r.commands != nil {
		out = append(out, r.commands, r.commandStreams)
	}
	return out
}

// errRegionDown is what a call into a region that is down returns.
func errRegionDown(region string) error {
	return fmt.Errorf("region %s is down: %w", region, fleet.ErrUnavailable)
}

// setOutage takes r down or brings it back.
func (s *Stack) setOutage(r *Region, down bool) error {
	r.outage.mu.Lock()
	defer r.outage.mu.Unlock()
	if r.outage.down.Load() == down {
		return nil
	}
	tables := []*memddb.GlobalTable{s.inventory, s.data, s.presence, s.commands}
	if down {
		// Nothing new starts in the region, then it is cut off.
		r.outage.down.Store(true)
		for _, iv := range r.invokers() {
			iv.Pause()
		}
		for _, g := range tables {
			if err := g.Pause(r.Name); err != nil {
				return fmt.Errorf("take %s down: %w", r.Name, err)
			}
		}
		r.Broker.SetDown(true)
		if err := s.router.SetDown(r.Name, true); err != nil {
			return fmt.Errorf("global endpoint: %w", err)
		}
		s.log.Warn("region down: endpoint closed, replication held, functions stopped", "region", r.Name, "apiReads", s.apiRegionName())
		return nil
	}
	r.Broker.SetDown(false)
	if err := s.router.SetDown(r.Name, false); err != nil {
		return fmt.Errorf("global endpoint: %w", err)
	}
	// The functions first, so that the stream records of the replication
	// it catches up with find them running.
	for _, iv := range r.invokers() {
		iv.Resume()
	}
	held := 0
	for _, g := range tables {
		held += g.Held()
		if err := g.Resume(r.Name); err != nil {
			return fmt.Errorf("bring %s up: %w", r.Name, err)
		}
	}
	r.outage.down.Store(false)
	s.log.Info("region up: replication and functions resume", "region", r.Name, "heldReplicationAndRecords", held, "apiReads", s.apiRegionName())
	return nil
}

// checkDown checks Config.Down against the regions.
func (c *Config) checkDown(regions map[string]bool) error {
	for _, r := range c.Down {
		if !regions[r] {
			return fmt.Errorf("down region %q is not one of the regions %v", r, c.Regions)
		}
	}
	return nil
}

// apiRegion is the region whose replicas of the inventory and the data
// table the HTTP API uses: the primary, or while it is down the first
// region (in configured order) that is up.
func (s *Stack) apiRegion() (*Region, error) {
	for _, r := range s.regions {
		if !r.Down() {
			return r, nil
		}
	}
	return nil, fmt.Errorf("every region is down: %w", fleet.ErrUnavailable)
}

func (s *Stack) apiRegionName() string {
	r, err := s.apiRegion()
	if err != nil {
		return "none"
	}
	return r.Name
}

// apiInventory is the API's inventory: the replica of apiRegion.
type apiInventory struct{ s *Stack }

func (a apiInventory) replica() (api.Inventory, error) {
	r, err := a.s.apiRegion()
	if err != nil {
		return nil, err
	}
	return r.Inventory, nil
}

func (a apiInventory) Get(ctx context.Context, thingName string) (fleet.Device, error) {
	inv, err := a.replica()
	if err != nil {
		return fleet.Device{}, err
	}
	return inv.Get(ctx, thingName)
}

func (a apiInventory) List(ctx context.Context, limit int, cursor string) ([]fleet.Device, string, error) {
	inv, err := a.replica()
	if err != nil {
		return nil, "", err
	}
	return inv.List(ctx, limit, cursor)
}

func (a apiInventory) Update(ctx context.Context, d fleet.Device, expectVersion int64) error {
	inv, err := a.replica()
	if err != nil {
		return err
	}
	return inv.Update(ctx, d, expectVersion)
}

func (a apiInventory) Revocation(ctx context.Context, thingName string) (fleet.Revocation, error) {
	inv, err := a.replica()
	if err != nil {
		return fleet.Revocation{}, err
	}
	return inv.Revocation(ctx, thingName)
}

func (a apiInventory) Revoke(ctx context.Context, rev fleet.Revocation) error {
	inv, err := a.replica()
	if err != nil {
		return err
	}
	return inv.Revoke(ctx, rev)
}

// apiTelemetry is the API's data table: the replica of apiRegion.
type apiTelemetry struct{ s *Stack }

func (a apiTelemetry) Page(ctx context.Context, device string, limit int, cursor string) ([]fleet.Message, string, error) {
	r, err := a.s.apiRegion()
	if err != nil {
		return nil, "", err
	}
	return r.Telemetry.Page(ctx, device, limit, cursor)
}

// regionRegistry is a region's registry as the API reaches it: unavailable
// while the region is down.
type regionRegistry struct {
	r    *Region
	next api.RegionRegistry
}

func (g regionRegistry) check() error {
	if g.r.Down() {
		return errRegionDown(g.r.Name)
	}
	return nil
}

func (g regionRegistry) DescribeThing(ctx context.Context, name string) (fleet.Thing, error) {
	if err := g.check(); err != nil {
		return fleet.Thing{}, err
	}
	return g.next.DescribeThing(ctx, name)
}

func (g regionRegistry) DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error) {
	if err := g.check(); err != nil {
		return fleet.Certificate{}, err
	}
	return g.next.DescribeCertificate(ctx, id)
}

func (g regionRegistry) ListThingPrincipals(ctx context.Context, thing string) ([]string, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	return g.next.ListThingPrincipals(ctx, thing)
}

func (g regionRegistry) ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	return g.next.ListAttachedPolicies(ctx, principalARN)
}

// gate holds an Invoker's invocations while its region is down.
type gate struct {
	mu     sync.Mutex
	closed chan struct{} // non-nil while paused; closed by Resume
	held   atomic.Int64  // invocations waiting at the gate
}

// Pause holds the invocations that have not started yet: each waits, not
// counted by Pending, until Resume, as a region that is down runs nothing.
// One that is running goes on.
func (iv *Invoker) Pause() {
	iv.gate.mu.Lock()
	defer iv.gate.mu.Unlock()
	if iv.gate.closed == nil {
		iv.gate.closed = make(chan struct{})
	}
}

// Resume releases what Pause held.
func (iv *Invoker) Resume() {
	iv.gate.mu.Lock()
	defer iv.gate.mu.Unlock()
	if iv.gate.closed != nil {
		close(iv.gate.closed)
		iv.gate.closed = nil
	}
}

// Paused reports whether the invoker holds its invocations.
func (iv *Invoker) Paused() bool {
	iv.gate.mu.Lock()
	defer iv.gate.mu.Unlock()
	return iv.gate.closed != nil
}

// Held is the number of invocations waiting for Resume.
func (iv *Invoker) Held() int64 { return iv.gate.held.Load() }

// waitUp returns when the invoker is not paused, or the invoker's context's
// error when it closes first.
func (iv *Invoker) waitUp() error {
	for {
		iv.gate.mu.Lock()
		ch := iv.gate.closed
		iv.gate.mu.Unlock()
		if ch == nil {
			return nil
		}
		iv.gate.held.Add(1)
		select {
		case <-ch:
			iv.gate.held.Add(-1)
		case <-iv.ctx.Done():
			iv.gate.held.Add(-1)
			return iv.ctx.Err()
		}
	}
}
