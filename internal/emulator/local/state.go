package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/policy"
	"github.com/mriot/mriot/internal/emulator/store"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
)

// StateFile is the file in Config.StateDir that holds the stack's state
// when Config.Persist is set.
const StateFile = "state.db"

// StateInfo tells where the stack keeps its state and what Start found.
type StateInfo struct {
	// Path is the state file ("" when the stack keeps nothing).
	Path string
	// Devices is the number of devices in the primary region's inventory
	// at Start; Things the number of things in each region's registry.
	Devices int
	Things  map[string]int
	// Resumed is the number of queued function events that Start invoked
	// again (those queued or running when the stack stopped).
	Resumed int
}

// State tells where the stack keeps its state and what Start restored.
func (s *Stack) State() StateInfo {
	st := s.state
	st.Things = maps.Clone(st.Things)
	return st
}

// openState opens the state file (after deleting it with Config.Reset),
// unless the stack keeps nothing.
func (s *Stack) openState() error {
	if !s.cfg.Persist {
		return nil
	}
	path := filepath.Join(s.cfg.StateDir, StateFile)
	opts := store.Options{NoSync: s.cfg.StateNoSync, Log: s.log.With("component", "state")}
	if s.cfg.Reset {
		// Opened first, so that a file another mriot local is using is
		// not deleted under it; a file that does not open is deleted all
		// the same (that is what --reset is for).
		st, err := store.Open(path, opts)
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("--reset: %w", err)
		}
		if err == nil {
			_ = st.Close()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--reset: %w", err)
		}
		s.log.Info("state deleted (--reset)", "path", path)
	}
	st, err := store.Open(path, opts)
	if err != nil {
		return fmt.Errorf("%w (mriot local --reset starts over with an empty state)", err)
	}
	s.store = st
	s.state.Path = path
	s.state.Things = map[string]int{}
	return nil
}

// restoreTables loads the tables' state from the state file and journals
// their changes there.
func (s *Stack) restoreTables(tables ...*memddb.GlobalTable) error {
	if s.store == nil {
		return nil
	}
	for _, g := range tables {
		if err := g.Restore(s.store); err != nil {
			return fmt.Errorf("state in %s: %w (mriot local --reset starts over with an empty state)", s.state.Path, err)
		}
	}
	return nil
}

// restoreRegistry loads a region's registry from the state file and
// journals its changes there.
func (s *Stack) restoreRegistry(reg *memiot.Registry) error {
	if s.store == nil {
		return nil
	}
	if err := reg.Restore(s.store); err != nil {
		return fmt.Errorf("state in %s: %w (mriot local --reset starts over with an empty state)", s.state.Path, err)
	}
	s.state.Things[reg.Region()] = len(reg.ThingList())
	return nil
}

// resumeQueues makes the region's function event queues durable and
// invokes the events they held when the stack stopped.
func (s *Stack) resumeQueues(r *Region) error {
	if s.store == nil {
		return nil
	}
	for _, iv := range r.invokers() {
		n, err := iv.Restore(s.store, "invoke/"+r.Name+"/"+iv.Name)
		if err != nil {
			return fmt.Errorf("state in %s: %w (mriot local --reset starts over with an empty state)", s.state.Path, err)
		}
		s.state.Resumed += n
		if n > 0 {
			r.log.Info("queued events resumed", "function", iv.Name, "events", n)
		}
	}
	return nil
}

// countDevices counts the devices of the primary region's inventory
// replica (revocation records are not devices).
func (s *Stack) countDevices() {
	if s.store == nil {
		return
	}
	n := 0
	for _, item := range s.inventory.Replica(s.cfg.Regions[0]).Snapshot() {
		name, _ := item[ddbitem.AttrThingName].(*types.AttributeValueMemberS)
		if name == nil {
			continue
		}
		if _, rev := ddbitem.IsRevocationKey(name.Value); !rev {
			n++
		}
	}
	s.state.Devices = n
}

// devicePolicy creates the region's device policy, or brings a kept one up
// to date (the document this version of mriot writes).
func devicePolicy(ctx context.Context, reg *memiot.Registry, region string) error {
	doc := policy.DevicePolicy(region, AccountID)
	err := reg.CreatePolicy(ctx, DevicePolicyName, doc)
	if errors.Is(err, fleet.ErrAlreadyExists) {
		err = reg.ReplacePolicy(ctx, DevicePolicyName, doc)
	}
	if err != nil {
		return fmt.Errorf("region %s device policy: %w", region, err)
	}
	return nil
}

// closeState closes the state file once nothing writes any more.
func (s *Stack) closeState() {
	if s.store == nil {
		return
	}
	if err := s.store.Close(); err != nil {
		s.log.Error("closing the state file", "error", err.Error())
	}
}

// StateStats are the state file's commits and changes since Start (zero
// when the stack keeps nothing).
func (s *Stack) StateStats() store.Stats {
	if s.store == nil {
		return store.Stats{}
	}
	return s.store.Stats()
}
