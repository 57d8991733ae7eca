package local

import (
	"context"
	"fmt"
	"strings"

	"github.com/mriot/mriot/internal/core/fleet"
)

// PublishToDevice publishes payload on topic from the data endpoint of
// every region that is up, as an operator would call IoT's data-plane
// Publish in each region to reach a device connected to any of them, and
// returns per region how many connected sessions got it (api.Admin). The
// topic must be under e/<thingName>/ (fleet.ErrInvalid otherwise), where
// the device policy lets the device subscribe and receive.
func (s *Stack) PublishToDevice(ctx context.Context, thingName, topic string, payload []byte, qos byte) (map[string]int, error) {
	if prefix := "e/" + thingName + "/"; !strings.HasPrefix(topic, prefix) || len(topic) == len(prefix) {
		return nil, fmt.Errorf("publish to %s: topic %q is not under %s: %w", thingName, topic, prefix, fleet.ErrInvalid)
	}
	out := make(map[string]int, len(s.regions))
	for _, r := range s.regions {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("publish to %s: %w", thingName, err)
		}
		if r.Down() {
			continue // its endpoint is closed: nobody is connected there
		}
		n, err := r.Broker.Deliver(topic, payload, qos)
		if err != nil {
			return out, fmt.Errorf("publish to %s in %s: %w", thingName, r.Name, err)
		}
		out[r.Name] = n
	}
	return out, nil
}
