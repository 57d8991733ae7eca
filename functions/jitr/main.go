// Command jitr is the just-in-time registration Lambda, invoked by the IoT
// rule on $aws/events/certificates/registered/#: internal/workflow/jitr's handler over
// this region's IoT registry, inventory replica and device lease table.
//
// Environment: INVENTORY_TABLE, LEASES_TABLE (the region's device lease
// table), DEVICE_POLICY_NAME, CLAIMS_TABLE (optional: the region's claims
// table shared by every instance), AWS_REGION (set by Lambda), TRACING (true:
// X-Ray), LOG_LEVEL (see internal/aws/wiring).
package main

import (
	"fmt"
	"log/slog"

	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/workflow/jitr"
)

func build(d wiring.RegistryDeps, s wiring.RegistrySettings, log *slog.Logger) (*jitr.Handler, error) {
	h, err := jitr.New(jitr.Config{
		Registry:   d.Registry,
		Inventory:  d.Inventory,
		Leases:     d.Leases,
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log,
		Metrics:    d.Metrics,
		Tracer:     d.Tracer,
		Claims:     claims(d),
	})
	if err != nil {
		return nil, fmt.Errorf("jitr handler: %w", err)
	}
	return h, nil
}

// claims is the claims adapter as a jitr.Claims: nil (not a typed nil
// pointer) without CLAIMS_TABLE.
func claims(d wiring.RegistryDeps) jitr.Claims {
	if d.Claims == nil {
		return nil
	}
	return d.Claims
}

func main() { wiring.StartRegistryFunction("jitr", build) }
