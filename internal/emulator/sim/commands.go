package sim

import (
	"context"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/fleet"
)

// CommandFilter is the topic filter a device subscribes to for its
// commands: e/<name>/cmd/+ (the command id is the last level).
func CommandFilter(name string) string { return "e/" + name + "/cmd/+" }

// AckPayload is what a simulated device publishes on i/<name>/ack/<id>:
// the ack rule keeps its "result".
func AckPayload(receivedAt time.Time) []byte {
	return fmt.Appendf(nil, `{"result":{"ok":true,"receivedAt":%d}}`, receivedAt.UnixMilli())
}

// subscribeCommands subscribes client to the device's commands (QoS 1) and
// acknowledges each one it receives on i/<name>/ack/<id> (QoS 1). A
// command received again (a redelivery on a new connection, or MQTT's
// duplicate) is acknowledged again: acks are idempotent.
func (r *run) subscribeCommands(ctx context.Context, client mqtt.Client, name string) error {
	prefix := "e/" + name + "/cmd/"
	tok := client.Subscribe(CommandFilter(name), 1, func(c mqtt.Client, m mqtt.Message) {
		id, ok := strings.CutPrefix(m.Topic(), prefix)
		if !ok || fleet.ValidateCommandID(id) != nil {
			return
		}
		r.commands.Add(1)
		r.log.Debug("sim: command", "device", name, "commandId", id, "duplicate", m.Duplicate())
		// Not waited for here: paho runs this handler on its own goroutine
		// (order does not matter), and the PUBACK comes on the same one.
		c.Publish(fleet.AckTopic(name, id), 1, false, AckPayload(time.Now()))
	})
	if err := wait(ctx, tok, r.cfg.AckTimeout); err != nil {
		return fmt.Errorf("subscribe %s: %w", CommandFilter(name), err)
	}
	return nil
}
