// Command replicate is the replication Lambda, invoked through EventBridge
// (inventory stream → Pipe → custom bus → rule) with one stream record per
// event: internal/workflow/replicate's handler over this region's IoT registry,
// inventory replica and device lease table.
//
// Environment: INVENTORY_TABLE, LEASES_TABLE (the region's device lease
// table), DEVICE_POLICY_NAME, AWS_REGION (set by Lambda), TRACING (true:
// X-Ray), LOG_LEVEL (see internal/aws/wiring).
package main

import (
	"fmt"
	"log/slog"

	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/workflow/replicate"
)

func build(d wiring.RegistryDeps, s wiring.RegistrySettings, log *slog.Logger) (*replicate.Handler, error) {
	h, err := replicate.New(replicate.Config{
		Registry:   d.Registry,
		Inventory:  d.Inventory,
		Leases:     d.Leases,
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log,
		Metrics:    d.Metrics,
		Tracer:     d.Tracer,
	})
	if err != nil {
		return nil, fmt.Errorf("replicate handler: %w", err)
	}
	return h, nil
}

func main() { wiring.StartRegistryFunction("replicate", build) }
