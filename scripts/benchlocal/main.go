// Command benchlocal measures telemetry through the local stack's MQTT
// endpoint beside mosquitto in the same run, with the same client (paho,
// one connection per device), the same mutual TLS (mosquitto is given the
// stack's server certificate and CA chain and requires a client
// certificate) and QoS 1: every device publishes its messages one after
// the other, each waiting for its PUBACK, all devices at once.
//
// A round publishes devices × messages to each target in turn, the order
// rotating from round to round; the stacks keep their data across rounds,
// so later rounds measure a fuller store (-rounds 10 -messages 500 is a
// 100,000-message run in 10,000-message windows). On a shared, noisy
// machine an absolute rate says little: the ratio to mosquitto, in the
// same round, is the result.
//
// Two rates are printed for the stack: "acked" (the last PUBACK: with the
// state file, a PUBACK follows the commit of the ingest event), and
// "stored" (every message of the round in the data table of both
// regions, the stack idle again; the global tables' simulated replication
// lag is set to 1 ns, so that no round ends with a wait that is no work).
// And the CPU time per message: this process's (the clients, and the
// stack), plus mosquitto's process for mosquitto; steadier than the rates
// on a machine other work shares.
//
//	go run ./scripts/benchlocal [-devices 20] [-messages 200] [-rounds 3] [-modes memory,state-file] [-endpoint global|region] [-cpuprofile FILE]
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
	"github.com/mriot/mriot/internal/testkit/proc"
)

// ErrNoMosquitto is returned when the mosquitto broker is not installed.
var ErrNoMosquitto = errors.New("mosquitto (the broker, Debian package mosquitto) is not installed")

var modes = map[string]local.Config{
	"memory":     {},
	"state-file": {Persist: true},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchlocal:", err)
		os.Exit(1)
	}
}

type options struct {
	devices, messages, rounds int
	modes                     []string
	endpoint                  string
	keep                      bool
	cpuprofile                string
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("benchlocal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.devices, "devices", 20, "devices, one connection each, publishing at once")
	fs.IntVar(&o.messages, "messages", 200, "QoS 1 messages per device per round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each publishes devices × messages to every target")
	m := fs.String("modes", "memory,state-file", "the stack's modes: memory, state-file")
	fs.StringVar(&o.endpoint, "endpoint", "global", "the stack's endpoint the devices use: global (the latency-routed one, as mriot local prints) or region (the first region's broker)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, mosquitto.conf)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the rounds (this process: the clients and the stacks) to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.devices < 1 || o.messages < 1 || o.rounds < 1 {
		return o, fmt.Errorf("-devices, -messages and -rounds must be at least 1")
	}
	for mode := range strings.SplitSeq(*m, ",") {
		if _, ok := modes[mode]; !ok {
			return o, fmt.Errorf("-modes: unknown mode %q (memory, state-file)", mode)
		}
		o.modes = append(o.modes, mode)
	}
	if o.endpoint != "global" && o.endpoint != "region" {
		return o, fmt.Errorf("-endpoint: %q is neither global nor region", o.endpoint)
	}
	return o, nil
}

// target is one broker with its connected devices.
type target struct {
	name    string
	stack   *local.Stack // nil for mosquitto
	clients []mqtt.Client
	pid     int // mosquitto's process, whose CPU time counts too
	// per round
	acked, stored []time.Duration
	cpu           []time.Duration // CPU time of this process (and mosquitto) in the target's rounds
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops mosquitto
	mosq, err := exec.LookPath("mosquitto")
	if err != nil {
		if mosq, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			return ErrNoMosquitto
		}
	}
	dir, err := os.MkdirTemp("", "benchlocal-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "benchlocal: files in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	names := make([]string, o.devices)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%04d", i)
	}
	// One PKI for every target: the stacks' state directories start as
	// copies of it, mosquitto reads its files.
	pkiDir := filepath.Join(dir, "pki")
	ps := pki.Store{Dir: pkiDir}
	if _, err := ps.Init(); err != nil {
		return err
	}
	for _, n := range names {
		if _, _, err := ps.Device(n); err != nil {
			return err
		}
	}
	roots := x509.NewCertPool()
	rootPEM, err := ps.RootPEM()
	if err != nil {
		return err
	}
	roots.AppendCertsFromPEM(rootPEM)

	var targets []*target
	defer func() {
		for _, t := range targets {
			for _, c := range t.clients {
				c.Disconnect(50)
			}
			if t.stack != nil {
				t.stack.Close()
			}
		}
	}()

	addr, pid, err := startMosquitto(ctx, mosq, dir, ps)
	if err != nil {
		return err
	}
	mt := &target{name: "mosquitto", pid: pid}
	targets = append(targets, mt)
	if mt.clients, err = connect(ctx, addr, roots, ps, names); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}

	for _, mode := range o.modes {
		st, err := startStack(ctx, dir, mode, pkiDir)
		if err != nil {
			return err
		}
		t := &target{name: mode, stack: st}
		targets = append(targets, t)
		addr := st.GlobalAddr()
		if o.endpoint == "region" {
			addr = st.Regions()[0].Broker.Addr()
		}
		if err := onboard(ctx, st, addr, roots, ps, names); err != nil {
			return fmt.Errorf("%s: onboarding: %w", mode, err)
		}
		if t.clients, err = connect(ctx, addr, roots, ps, names); err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
	}

	perRound := o.devices * o.messages
	fmt.Fprintf(stdout, "benchlocal: %d devices × %d QoS 1 messages over mutual TLS per round and target, %d rounds (%d messages per target), stack endpoint %s\n",
		o.devices, o.messages, o.rounds, perRound*o.rounds, o.endpoint)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	var head strings.Builder
	head.WriteString("round\tmessages\tmosquitto msg/s\tµs cpu/msg\t")
	for _, m := range o.modes {
		head.WriteString(m + " acked msg/s\tratio\t" + m + " stored msg/s\tratio\tµs cpu/msg\t")
	}
	fmt.Fprintln(tw, head.String())
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	seq := 0
	for r := range o.rounds {
		order := slices.Clone(targets)
		k := r % len(order)
		order = append(order[k:], order[:k]...)
		for _, t := range order {
			cpu0 := cpuTime(t.pid)
			a, s, err := publishRound(ctx, t, names, o.messages, seq)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, t.name, err)
			}
			t.cpu = append(t.cpu, cpuTime(t.pid)-cpu0)
			t.acked = append(t.acked, a)
			t.stored = append(t.stored, s)
		}
		seq += o.messages
		var line strings.Builder
		line.WriteString(fmt.Sprintf("%d\t%d\t%.0f\t%.1f\t", r+1, perRound*(r+1), rate(perRound, mt.acked[r]), perMsg(mt.cpu[r], perRound)))
		for _, t := range targets[1:] {
			line.WriteString(fmt.Sprintf("%.0f\t%.2f\t%.0f\t%.2f\t%.1f\t",
				rate(perRound, t.acked[r]), mt.acked[r].Seconds()/t.acked[r].Seconds(),
				rate(perRound, t.stored[r]), mt.acked[r].Seconds()/t.stored[r].Seconds(), perMsg(t.cpu[r], perRound)))
		}
		fmt.Fprintln(tw, line.String())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	total := perRound * o.rounds
	mAll := sum(mt.acked)
	fmt.Fprintf(stdout, "mosquitto %.0f msg/s over %d messages\n", rate(total, mAll), total)
	// CPU per message: the clients' (this process) and the broker's
	// (mosquitto's process, or the stack in this one); the clients' share
	// is the same for every target.
	for _, t := range targets {
		fmt.Fprintf(stdout, "cpu %s %.1f µs/msg (clients and broker)\n", t.name, perMsg(sum(t.cpu), total))
	}
	for _, t := range targets[1:] {
		if err := verify(ctx, t.stack, names, o.messages*o.rounds); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		a, s := sum(t.acked), sum(t.stored)
		fmt.Fprintf(stdout, "ratio %s %.2f × mosquitto acked (%.0f msg/s), %.2f × stored (%.0f msg/s)\n",
			t.name, mAll.Seconds()/a.Seconds(), rate(total, a), mAll.Seconds()/s.Seconds(), rate(total, s))
	}
	return nil
}

// cpuTime is this process's user and system CPU time, plus process pid's
// when pid > 0 (from /proc; 0 added where /proc cannot be read).
func cpuTime(pid int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// Fields after the command's closing parenthesis: utime and
			// stime are the 12th and 13th, in clock ticks (USER_HZ, 100).
			if i := bytes.LastIndexByte(b, ')'); i > 0 {
				f := strings.Fields(string(b[i+1:]))
				if len(f) > 12 {
					u, _ := strconv.ParseInt(f[11], 10, 64)
					s, _ := strconv.ParseInt(f[12], 10, 64)
					t += time.Duration(u+s) * 10 * time.Millisecond
				}
			}
		}
	}
	return t
}

func perMsg(cpu time.Duration, n int) float64 { return float64(cpu.Microseconds()) / float64(n) }

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

// publishRound publishes messages QoS 1 messages from every client at once,
// each waiting for its PUBACK, and returns the time to the last PUBACK and,
// for a stack, to the stack being idle again (every message stored in
// both regions).
func publishRound(ctx context.Context, t *target, names []string, messages, seq int) (acked, stored time.Duration, err error) {
	var wg sync.WaitGroup
	errs := make(chan error, len(t.clients))
	start := time.Now()
	for i, c := range t.clients {
		wg.Go(func() {
			topic := "i/" + names[i] + "/m"
			for k := range messages {
				tok := c.Publish(topic, 1, false, fmt.Sprintf(`{"message": {"seq": %d, "n": %d}}`, seq+k, k))
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					errs <- fmt.Errorf("publish %s: %v", names[i], tok.Error())
					return
				}
			}
		})
	}
	wg.Wait()
	acked = time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	stored = acked
	if t.stack != nil {
		if err := t.stack.WaitIdle(ctx); err != nil {
			return 0, 0, err
		}
		stored = time.Since(start)
	}
	return acked, stored, nil
}

// verify checks that every region stored every message of every device
// (and the one of its onboarding).
func verify(ctx context.Context, st *local.Stack, names []string, want int) error {
	for _, r := range st.Regions() {
		for _, n := range names {
			msgs, err := r.Telemetry.Query(ctx, n, 10_000_000)
			if err != nil {
				return err
			}
			if got := len(msgs) - 1; got != want {
				return fmt.Errorf("%s stored %d of %d messages of %s", r.Name, got, want, n)
			}
		}
	}
	return nil
}

func tlsConfig(roots *x509.CertPool, ps pki.Store, name string) (*tls.Config, error) {
	certFile, keyFile, err := ps.Device(name)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}, nil
}

// connect opens one paho connection per device (MQTT 3.1.1, as AWS IoT).
func connect(ctx context.Context, addr string, roots *x509.CertPool, ps pki.Store, names []string) ([]mqtt.Client, error) {
	clients := make([]mqtt.Client, 0, len(names))
	for _, n := range names {
		cfg, err := tlsConfig(roots, ps, n)
		if err != nil {
			return clients, err
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(n).
			SetTLSConfig(cfg).SetAutoReconnect(false).SetProtocolVersion(4))
		tok := c.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return clients, fmt.Errorf("connect %s: %v", n, tok.Error())
		}
		clients = append(clients, c)
		if ctx.Err() != nil {
			return clients, ctx.Err()
		}
	}
	return clients, nil
}

// startStack starts a two-region local stack in mode, its state directory a
// copy of the shared PKI, logging at mriot local's default level to a file
// as mriot local does.
func startStack(ctx context.Context, dir, mode, pkiDir string) (*local.Stack, error) {
	stateDir := filepath.Join(dir, mode)
	if err := os.CopyFS(stateDir, os.DirFS(pkiDir)); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(stateDir, "mriot.log"))
	if err != nil {
		return nil, err
	}
	cfg := modes[mode]
	cfg.StateDir = stateDir
	cfg.ReconcileInterval = -1
	// The global tables' simulated replication lag (200 ms by default)
	// would end every round with a wait that is no work: 1 ns.
	cfg.ReplicationLag = time.Nanosecond
	cfg.Log = obs.NewLogger(logf, "info")
	cfg.Metrics = obs.NewRecorder()
	st, err := local.Start(ctx, cfg)
	if err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("%s stack: %w", mode, err)
	}
	return st, nil
}

// onboard connects every device once (just-in-time registration: the first
// connection registers the certificate and is refused) until each has
// published a message, and waits for the stack to settle.
func onboard(ctx context.Context, st *local.Stack, addr string, roots *x509.CertPool, ps pki.Store, names []string) error {
	sum, err := sim.Run(ctx, sim.Config{
		Endpoint: addr, RootPool: roots, Count: len(names), Messages: 1,
		Backoff: sim.Backoff{Initial: 200 * time.Millisecond, Max: 2 * time.Second},
		Mint: func(i int) (sim.Device, error) {
			certFile, keyFile, err := ps.Device(names[i])
			return sim.Device{Name: names[i], CertFile: certFile, KeyFile: keyFile}, err
		},
	})
	if err != nil {
		return err
	}
	if sum.Acked != int64(len(names)) {
		return fmt.Errorf("%d of %d devices published", sum.Acked, len(names))
	}
	return st.WaitIdle(ctx)
}

// startMosquitto runs mosquitto with a TLS listener on a free loopback port
// that requires a client certificate from the stack's CA chain, with the
// stack's server certificate; it stops when ctx is done.
func startMosquitto(ctx context.Context, bin, dir string, ps pki.Store) (addr string, pid int, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, err
	}
	addr = l.Addr().String()
	_ = l.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	// Run as this user: mosquitto started by root would switch to user
	// mosquitto, who cannot read the PKI.
	u, err := user.Current()
	if err != nil {
		return "", 0, err
	}
	text := fmt.Sprintf(`user %s
per_listener_settings false
allow_anonymous false
persistence false
log_dest stderr
log_type error
log_type warning
listener %s 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
`, u.Username, port, ps.Path(pki.ChainFile), ps.Path(pki.ServerCertFile), ps.Path(pki.ServerKeyFile))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return "", 0, err
	}
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	out, err := os.Create(filepath.Join(dir, "mosquitto.out"))
	if err != nil {
		return "", 0, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	proc.Group(cmd, 2*time.Second)
	if err := cmd.Start(); err != nil {
		return "", 0, fmt.Errorf("start mosquitto: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = out.Close(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return addr, cmd.Process.Pid, nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "mosquitto.out"))
			return "", 0, fmt.Errorf("mosquitto exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "mosquitto.out"))
			return "", 0, fmt.Errorf("mosquitto does not listen on %s: %v\n%s", addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
