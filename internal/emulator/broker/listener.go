package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// listener is the endpoint's mochi listener: it accepts TCP connections,
// refuses them while the region is down, and completes the TLS handshake
// (with the registry check of the client certificate) before handing the
// *tls.Conn to mochi, so that a client that does not chain to a registered
// CA never reaches MQTT.
type listener struct {
	b  *Broker
	id string
	ln net.Listener
	wg sync.WaitGroup

	mu        sync.Mutex
	closing   bool
	establish listeners.EstablishFn // set by Serve
	conns     map[net.Conn]struct{} // open connections, closed on Close
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) Init(*slog.Logger) error { return nil } // listening since Start
func (l *listener) ID() string              { return l.id }
func (l *listener) Address() string         { return l.ln.Addr().String() }
func (l *listener) Protocol() string        { return "tcp+tls" }

func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	l.mu.Unlock()
	l.wg.Go(func() {
		for {
			conn, err := l.ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					l.b.log.Error("accept", "error", err)
				}
				return
			}
			if err := l.serveConn(conn); err != nil {
				_ = conn.Close()
				return
			}
		}
	})
}

// errNotServing: the listener is closing, or not serving yet.
var errNotServing = errors.New("endpoint not accepting connections")

// serveConn serves an accepted connection, as the accept loop does, or
// refuses it while the region is down; errNotServing, the connection left
// to the caller, when the listener is closing or not serving yet.
func (l *listener) serveConn(conn net.Conn) error {
	if l.b.down.Load() {
		l.b.stats.Refused.Add(1)
		_ = conn.Close()
		return nil
	}
	l.mu.Lock()
	if l.closing || l.establish == nil {
		l.mu.Unlock()
		return errNotServing
	}
	establish := l.establish
	if l.conns == nil {
		l.conns = map[net.Conn]struct{}{}
	}
	l.conns[conn] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		l.handle(conn, establish)
		l.mu.Lock()
		delete(l.conns, conn)
		l.mu.Unlock()
		_ = conn.Close()
	}()
	return nil
}

func (l *listener) handle(conn net.Conn, establish listeners.EstablishFn) {
	tc := tls.Server(conn, l.b.tlsCfg)
	ctx, cancel := context.WithTimeout(context.Background(), l.b.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.b.stats.Refused.Add(1)
		l.b.log.Info("TLS handshake refused", "remote", conn.RemoteAddr().String(), "error", err)
		_ = tc.Close()
		return
	}
	if err := establish(l.id, tc); err != nil {
		l.b.log.Debug("connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
}

func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	// Not mochi's closeClients: its Clients.GetByListener read-locks the
	// client map twice (through Len), and a client's Delete waiting between
	// the two locks deadlocks both (mochi v2.7.9; a test's Close hung the
	// race tier for 10 minutes). The broker's own index of sessions ends
	// them as closeClients would: DISCONNECT 0x8B, then the close.
	for _, cl := range l.b.sessionsOn(l.id) {
		_ = l.b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
	_ = l.ln.Close()
	// Connections still in the handshake or before CONNECT are not mochi
	// clients yet.
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
}

// wait waits for the accept loop and every connection goroutine.
func (l *listener) wait() { l.wg.Wait() }
