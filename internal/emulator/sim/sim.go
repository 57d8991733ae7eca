// Package sim is the device simulator behind `mriot device run`: it connects
// devices to an MQTT endpoint over mutual TLS with paho, the way a real
// device meets AWS IoT Core's just-in-time registration (the first
// connection is dropped while the certificate is PENDING_ACTIVATION, the
// device backs off with full jitter and retries), then publishes telemetry
// to i/<name>/m with QoS 1 at a rate and counts the PUBACKs.
package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/fleet"
)

// DefaultServerName is the data endpoint's name in its certificate.
const DefaultServerName = "iot.example.com"

// Defaults of Config.
const (
	DefaultRate             = 1.0
	DefaultDialConcurrency  = 32
	DefaultConnectTimeout   = 10 * time.Second
	DefaultAckTimeout       = 10 * time.Second
	DefaultProgressInterval = time.Second
	DefaultBackoffInitial   = 250 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	// maxReasons bounds the distinct error texts a Summary keeps.
	maxReasons = 20
)

// Device is one simulated device: its thing name (the MQTT client id) and
// its certificate, from files or in memory.
type Device struct {
	Name     string
	CertFile string
	KeyFile  string
	// Certificate is used instead of the files when set.
	Certificate *tls.Certificate
}

// Backoff is the retry delay after a refused connection: full jitter, a
// uniform random delay in [0, min(Max, Initial*2^(attempt-1))].
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// ceiling is the upper bound of the delay before retry number attempt (1-based).
func (b Backoff) ceiling(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		if d > b.Max/2 {
			return b.Max
		}
		d *= 2
	}
	return min(d, b.Max)
}

// Delay is the jittered delay before retry number attempt (1-based); rnd
// returns a uniform number in [0, n).
func (b Backoff) Delay(attempt int, rnd func(n int64) int64) time.Duration {
	c := b.ceiling(attempt)
	if c <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(c) + 1))
}

// Config configures a simulation.
type Config struct {
	// Endpoint is the MQTT endpoint, host:port.
	Endpoint string
	// ServerName is the name the server certificate is verified against
	// (default iot.example.com, whatever host Endpoint names).
	ServerName string
	// CAFile holds the PEM certificates that verify the server; RootPool is
	// used instead when set. Neither: the system roots.
	CAFile   string
	RootPool *x509.CertPool

	// Devices to run. When empty, Count devices are made by Mint.
	Devices []Device
	Count   int
	Mint    func(i int) (Device, error)

	// Rate is messages per second per device (default 1).
	Rate float64
	// Messages per device; 0 publishes until ctx is done.
	Messages int
	// Backoff after a refused connection (default 250ms, max 5s).
	Backoff Backoff
	// Jitter returns a uniform random number in [0, n) for the backoff
	// (nil: math/rand/v2.Int64N); tests make it deterministic.
	Jitter func(n int64) int64
	// MaxAttempts bounds the connection attempts per device before it gives
	// up (0: until ctx is done).
	MaxAttempts int
	// DialConcurrency bounds the connection attempts in progress at once
	// (default 32).
	DialConcurrency int
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration
	// AckTimeout bounds the wait for a PUBACK (default 10s).
	AckTimeout time.Duration
	// Payload makes message seq (1-based) of a device; default
	// {"message":{"device":NAME,"seq":SEQ,"sentAt":MILLIS}}.
	Payload func(device string, seq int) []byte

	// Progress receives a line every ProgressInterval (default 1s): devices
	// connected now, onboarded, refusals and messages. Nil: no progress.
	Progress         io.Writer
	ProgressInterval time.Duration
	// Logger logs each device's attempts at debug level (nil: discard).
	Logger *slog.Logger
}

// Latency summarises the times to first successful connect.
type Latency struct {
	P50, P99, Max time.Duration
}

// Summary is the outcome of a simulation.
type Summary struct {
	Devices int
	// Onboarded devices connected at least once.
	Onboarded int
	// Refused connection attempts (dropped, refused CONNACK, TLS failures,
	// timeouts), with their reasons.
	Refused        int64
	RefusalReasons map[string]int64
	// FirstConnect: from a device's first attempt to its first accepted
	// connection, over the onboarded devices.
	FirstConnect Latency
	// Sent QoS 1 publishes and Acked PUBACKs received.
	Sent, Acked int64
	// Errors after connecting (publish failures, lost connections, device
	// set-up failures), with their reasons.
	Errors       int64
	ErrorReasons map[string]int64
	// Commands received on e/<name>/cmd/<id> (and acknowledged).
	Commands int64
	Elapsed  time.Duration
}

// String renders a short human report.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices: %d, onboarded: %d, refused attempts: %d\n", s.Devices, s.Onboarded, s.Refused)
	if s.Onboarded > 0 {
		fmt.Fprintf(&b, "time to first successful connect: p50 %s, p99 %s, max %s\n",
			round(s.FirstConnect.P50), round(s.FirstConnect.P99), round(s.FirstConnect.Max))
	}
	fmt.Fprintf(&b, "messages: %d sent, %d acknowledged; errors: %d; elapsed %s\n", s.Sent, s.Acked, s.Errors, round(s.Elapsed))
	if s.Commands > 0 {
		fmt.Fprintf(&b, "commands: %d received and acknowledged\n", s.Commands)
	}
	writeReasons(&b, "refusals", s.RefusalReasons)
	writeReasons(&b, "errors", s.ErrorReasons)
	return strings.TrimRight(b.String(), "\n")
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d
}

func writeReasons(b *strings.Builder, title string, reasons map[string]int64) {
	if len(reasons) == 0 {
		return
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y string) int {
		if reasons[x] != reasons[y] {
			return int(reasons[y] - reasons[x])
		}
		return strings.Compare(x, y)
	})
	fmt.Fprintf(b, "%s:\n", title)
	for _, k := range keys {
		fmt.Fprintf(b, "  %6d  %s\n", reasons[k], k)
	}
}

// percentiles returns p50, p99 and max of ds by nearest rank.
func percentiles(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Latency{P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

// reasons counts error texts, keeping at most maxReasons distinct ones.
type reasons struct {
	mu sync.Mutex
	m  map[string]int64
}

func (r *reasons) add(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]int64{}
	}
	if _, ok := r.m[text]; !ok && len(r.m) >= maxReasons {
		text = "(other)"
	}
	r.m[text]++
}

func (r *reasons) snapshot() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(r.m))
	maps.Copy(out, r.m)
	return out
}

// StuckAfter is the number of refusals in a row after which the run says,
// once, that a device may never be let in.
const StuckAfter = 5

// hintStuck tells the person watching the progress, once per run, that a
// device keeps being refused and what that usually means: a new device is
// in after one refusal.
func (r *run) hintStuck(name string, err error) {
	if r.cfg.Progress == nil {
		return
	}
	r.stuck.Do(func() {
		fmt.Fprintf(r.cfg.Progress, "hint: %s was refused %d times in a row: %s. A new device is onboarded after its first refusal; "+
			"one that stays refused has a certificate that is revoked, decommissioned, inactive or from a CA this region does not know "+
			"(its state: GET /devices/%s on the HTTP API). It keeps retrying with backoff.\n", name, StuckAfter, Explain(err), name)
	})
}

// run is one simulation in progress.
type run struct {
	cfg   Config
	pool  *x509.CertPool
	total int
	dial  chan struct{}
	log   *slog.Logger

	connected, onboarded  atomic.Int64
	refused, sent, acked  atomic.Int64
	errs                  atomic.Int64
	commands              atomic.Int64
	refusalWhy, errorsWhy reasons
	stuck                 sync.Once // hintStuck

	mu    sync.Mutex
	first []time.Duration
}

// Run runs the devices until each has published cfg.Messages (or given up
// after MaxAttempts) or ctx is done, and summarises. Cancelling ctx is the
// normal way to stop an open-ended run: every connection is closed and the
// summary returned with a nil error. Errors are for a configuration that
// cannot run (no endpoint, unreadable CA or device certificates).
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	r, devices, err := prepare(cfg)
	if err != nil {
		return Summary{}, err
	}
	progressDone := make(chan struct{})
	stopProgress := make(chan struct{})
	if cfg.Progress != nil {
		go func() {
			defer close(progressDone)
			r.progress(start, stopProgress)
		}()
	} else {
		close(progressDone)
	}
	var wg sync.WaitGroup
	for i := range r.total {
		wg.Go(func() {
			var dev Device
			if devices != nil {
				dev = devices[i]
			} else {
				d, err := cfg.Mint(i)
				if err == nil {
					err = loadCertificate(&d)
				}
				if err != nil {
					r.fail(fmt.Sprintf("make device %d: %v", i, err))
					return
				}
				dev = d
			}
			r.device(ctx, dev)
		})
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone
	return r.summary(time.Since(start)), nil
}

func prepare(cfg Config) (*run, []Device, error) {
	if cfg.Endpoint == "" {
		return nil, nil, errors.New("simulate devices: no endpoint")
	}
	if cfg.ServerName == "" {
		cfg.ServerName = DefaultServerName
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Messages < 0 {
		return nil, nil, fmt.Errorf("simulate devices: messages %d is negative", cfg.Messages)
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = DefaultBackoffInitial
	}
	if cfg.Backoff.Max <= 0 {
		cfg.Backoff.Max = max(DefaultBackoffMax, cfg.Backoff.Initial)
	}
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		return nil, nil, fmt.Errorf("simulate devices: backoff max %s is below initial %s", cfg.Backoff.Max, cfg.Backoff.Initial)
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = DefaultDialConcurrency
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.Payload == nil {
		cfg.Payload = defaultPayload
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Int64N
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pool := cfg.RootPool
	if pool == nil && cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("simulate devices: read CA file: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, nil, fmt.Errorf("simulate devices: CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	var devices []Device
	total := len(cfg.Devices)
	if total > 0 {
		devices = slices.Clone(cfg.Devices)
		seen := map[string]bool{}
		for i := range devices {
			if err := fleet.ValidateThingName(devices[i].Name); err != nil {
				return nil, nil, fmt.Errorf("simulate devices: device %d: %w", i, err)
			}
			if seen[devices[i].Name] {
				return nil, nil, fmt.Errorf("simulate devices: device %s listed twice", devices[i].Name)
			}
			seen[devices[i].Name] = true
			if err := loadCertificate(&devices[i]); err != nil {
				return nil, nil, fmt.Errorf("simulate devices: %w", err)
			}
		}
	} else {
		if cfg.Count <= 0 || cfg.Mint == nil {
			return nil, nil, errors.New("simulate devices: no devices (set Devices, or Count and Mint)")
		}
		total = cfg.Count
	}
	r := &run{cfg: cfg, pool: pool, total: total, dial: make(chan struct{}, cfg.DialConcurrency), log: log}
	return r, devices, nil
}

// loadCertificate reads d's certificate files unless it has one in memory.
func loadCertificate(d *Device) error {
	if err := fleet.ValidateThingName(d.Name); err != nil {
		return fmt.Errorf("device name: %w", err)
	}
	if d.Certificate != nil {
		return nil
	}
	if d.CertFile == "" || d.KeyFile == "" {
		return fmt.Errorf("device %s: no certificate (set Certificate or CertFile and KeyFile)", d.Name)
	}
	c, err := tls.LoadX509KeyPair(d.CertFile, d.KeyFile)
	if err != nil {
		return fmt.Errorf("device %s: load certificate: %w", d.Name, err)
	}
	d.Certificate = &c
	return nil
}

func defaultPayload(device string, seq int) []byte {
	b, _ := json.Marshal(map[string]any{"message": map[string]any{
		"device": device, "seq": seq, "sentAt": time.Now().UnixMilli(),
	}})
	return b
}

// Topic is the telemetry topic of a device.
func Topic(name string) string { return "i/" + name + "/m" }

func (r *run) fail(reason string) {
	r.errs.Add(1)
	r.errorsWhy.add(reason)
}

func (r *run) progress(start time.Time, stop <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			fmt.Fprintf(r.cfg.Progress, "%6s  connected %d/%d  onboarded %d/%d  refused %d  sent %d  acked %d  errors %d\n",
				time.Since(start).Round(time.Second), r.connected.Load(), r.total, r.onboarded.Load(), r.total,
				r.refused.Load(), r.sent.Load(), r.acked.Load(), r.errs.Load())
		}
	}
}

func (r *run) summary(elapsed time.Duration) Summary {
	r.mu.Lock()
	lat := percentiles(r.first)
	r.mu.Unlock()
	return Summary{
		Devices: r.total, Onboarded: int(r.onboarded.Load()),
		Refused: r.refused.Load(), RefusalReasons: r.refusalWhy.snapshot(),
		FirstConnect: lat,
		Sent:         r.sent.Load(), Acked: r.acked.Load(),
		Errors: r.errs.Load(), ErrorReasons: r.errorsWhy.snapshot(),
		Commands: r.commands.Load(), Elapsed: elapsed,
	}
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// wait waits for a paho token, a timeout or ctx; it returns the token's
// error, or why it did not complete.
func wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no answer within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// device runs one device: connect (retrying with backoff), publish, and
// reconnect when the connection is lost, until its messages are sent, its
// attempts are spent or ctx is done.
func (r *run) device(ctx context.Context, dev Device) {
	log := r.log.With("device", dev.Name)
	tlsCfg := &tls.Config{
		RootCAs: r.pool, ServerName: r.cfg.ServerName,
		Certificates: []tls.Certificate{*dev.Certificate}, MinVersion: tls.VersionTLS12,
	}
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + r.cfg.Endpoint).
		SetClientID(dev.Name).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetTLSConfig(tlsCfg).
		SetConnectTimeout(r.cfg.ConnectTimeout).
		SetWriteTimeout(r.cfg.AckTimeout).
		SetKeepAlive(30 * time.Second).
		SetProtocolVersion(4).
		SetOrderMatters(false)
	var (
		firstAttempt time.Time
		onboarded    bool
		failures     int // consecutive refused attempts
		drops        int // consecutive connections lost before any PUBACK
		attempts     int
		seq          int
	)
	for ctx.Err() == nil && (r.cfg.Messages == 0 || seq < r.cfg.Messages) {
		if r.cfg.MaxAttempts > 0 && attempts >= r.cfg.MaxAttempts {
			r.fail(fmt.Sprintf("gave up after %d connection attempts", attempts))
			log.Debug("sim: giving up", "attempts", attempts)
			return
		}
		select {
		case r.dial <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if firstAttempt.IsZero() {
			firstAttempt = time.Now()
		}
		attempts++
		lost := make(chan error, 1)
		o := *opts
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
		client := mqtt.NewClient(&o)
		err := wait(ctx, client.Connect(), r.cfg.ConnectTimeout+time.Second)
		<-r.dial
		if err != nil {
			client.Disconnect(0)
			if ctx.Err() != nil {
				return
			}
			failures++
			r.refused.Add(1)
			r.refusalWhy.add("connect: " + Explain(err))
			if failures == StuckAfter {
				r.hintStuck(dev.Name, err)
			}
			delay := r.cfg.Backoff.Delay(failures, r.cfg.Jitter)
			log.Debug("sim: connection refused", "attempt", attempts, "error", err.Error(), "retryIn", delay)
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		failures = 0
		if !onboarded {
			onboarded = true
			r.onboarded.Add(1)
			r.mu.Lock()
			r.first = append(r.first, time.Since(firstAttempt))
			r.mu.Unlock()
		}
		r.connected.Add(1)
		log.Debug("sim: connected", "attempt", attempts)
		if err := r.subscribeCommands(ctx, client, dev.Name); err != nil {
			r.errs.Add(1)
			r.errorsWhy.add("commands: " + Explain(err))
		}
		var ackedHere bool
		seq, ackedHere = r.publish(ctx, client, dev.Name, seq, lost)
		r.connected.Add(-1)
		client.Disconnect(250)
		if ctx.Err() != nil || (r.cfg.Messages > 0 && seq >= r.cfg.Messages) {
			continue
		}
		// The connection was lost before the device was done. Back off
		// before reconnecting, more each time a connection is lost before
		// any PUBACK (a device the server keeps dropping, e.g. for a denied
		// publish), so that it never reconnects in a tight loop.
		if ackedHere {
			drops = 1
		} else {
			drops++
		}
		if !sleep(ctx, r.cfg.Backoff.Delay(drops, r.cfg.Jitter)) {
			return
		}
	}
}

// publish publishes at the configured rate while connected and returns the
// number of messages sent so far, and whether this connection got a PUBACK.
func (r *run) publish(ctx context.Context, client mqtt.Client, name string, seq int, lost <-chan error) (int, bool) {
	acked := false
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	next := time.NewTimer(0)
	defer next.Stop()
	topic := Topic(name)
	for r.cfg.Messages == 0 || seq < r.cfg.Messages {
		select {
		case <-ctx.Done():
			return seq, acked
		case err := <-lost:
			r.fail(fmt.Sprintf("connection lost: %v", err))
			return seq, acked
		case <-next.C:
		}
		next.Reset(interval)
		seq++
		r.sent.Add(1)
		err := wait(ctx, client.Publish(topic, 1, false, r.cfg.Payload(name, seq)), r.cfg.AckTimeout)
		switch {
		case err == nil:
			r.acked.Add(1)
			acked = true
		case ctx.Err() != nil:
			return seq, acked
		default:
			r.fail(fmt.Sprintf("publish: %v", err))
			if !client.IsConnectionOpen() {
				return seq, acked
			}
		}
	}
	return seq, acked
}
