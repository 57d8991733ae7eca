package broker

import (
	"errors"
	"fmt"
	"slices"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/policy"
)

// ErrEndpointDown is what Deliver answers on an endpoint that is closed or
// marked down.
var ErrEndpointDown = errors.New("endpoint down")

// Deliver publishes payload on topic from the endpoint itself, as IoT
// Core's data-plane Publish (iot-data) does: every session subscribed to a
// matching filter whose policies allow iot:Receive on the topic gets it
// (QoS qos, 0 or 1, or less if it subscribed with less), and the rules
// engine sees it. It returns how many connected sessions that is, counted
// just before the publish (a session that subscribes or leaves meanwhile
// may be counted wrong). Shared subscriptions are not counted.
func (b *Broker) Deliver(topic string, payload []byte, qos byte) (int, error) {
	if qos > 1 {
		return 0, fmt.Errorf("broker %s: deliver with QoS %d: IoT Core supports 0 and 1: %w", b.cfg.Region, qos, fleet.ErrInvalid)
	}
	if b.closed.Load() || b.down.Load() {
		return 0, fmt.Errorf("broker %s: deliver on %s: %w: %w", b.cfg.Region, topic, ErrEndpointDown, fleet.ErrUnavailable)
	}
	n := b.receivers(topic)
	b.cfg.Publish(topic, slices.Clone(payload))
	if err := b.server.Publish(topic, payload, false, qos); err != nil {
		return 0, fmt.Errorf("broker %s: deliver on %s: %w", b.cfg.Region, topic, err)
	}
	b.log.Info("message delivered from the endpoint", "topic", topic, "bytes", len(payload), "qos", qos, "sessions", n)
	return n, nil
}

// receivers counts the connected sessions that a message on topic reaches:
// subscribed to a matching filter, certificate still ACTIVE, iot:Receive
// allowed. It changes nothing (mochi checks each delivery through the hook).
func (b *Broker) receivers(topic string) int {
	n := 0
	for id := range b.server.Topics.Subscribers(topic).Subscriptions {
		cl, ok := b.server.Clients.Get(id)
		if !ok || cl.Net.Inline || cl.Closed() {
			continue
		}
		v, ok := b.sessions.Load(cl)
		if !ok {
			continue
		}
		s := v.(*session)
		if b.stillActive(s) && b.allowed(b.log.With("clientId", cl.ID), s, policy.ActionReceive, "topic", topic) {
			n++
		}
	}
	return n
}
