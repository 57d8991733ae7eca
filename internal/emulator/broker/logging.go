package broker

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// redactPackets is the handler of mochi's logger: an MQTT packet in a log
// line (mochi logs the whole packet when a hook rejects a publish or a
// packet fails) becomes a summary without its payload, which is a device's
// data and can be large.
type redactPackets struct{ slog.Handler }

func (h redactPackets) Handle(ctx context.Context, r slog.Record) error {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		_, found = packetOf(a.Value)
		return !found
	})
	if !found {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h redactPackets) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redact(a)
	}
	return redactPackets{h.Handler.WithAttrs(red)}
}

func (h redactPackets) WithGroup(name string) slog.Handler {
	return redactPackets{h.Handler.WithGroup(name)}
}

func packetOf(v slog.Value) (packets.Packet, bool) {
	if v.Kind() != slog.KindAny {
		return packets.Packet{}, false
	}
	switch pk := v.Any().(type) {
	case packets.Packet:
		return pk, true
	case *packets.Packet:
		if pk != nil {
			return *pk, true
		}
	}
	return packets.Packet{}, false
}

// redact replaces a packet by what identifies it.
func redact(a slog.Attr) slog.Attr {
	pk, ok := packetOf(a.Value)
	if !ok {
		return a
	}
	return slog.Group(a.Key,
		"type", packets.PacketNames[pk.FixedHeader.Type],
		"packetId", pk.PacketID,
		"topic", pk.TopicName,
		"qos", pk.FixedHeader.Qos,
		"retain", pk.FixedHeader.Retain,
		"payloadBytes", len(pk.Payload),
	)
}
