package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/router"
	"github.com/mriot/mriot/internal/fake/memiot"
)

func newLocalCmd() *cobra.Command {
	var (
		regions        []string
		mqttPort       int
		apiAddr        string
		cas            []string
		serverCert     string
		serverKey      string
		latency        string
		replicationLag time.Duration
		apiLatency     time.Duration
		faults         []string
		quotas         string
		demo           bool
		logLevel       string
		logFile        string
		reconcileEvery time.Duration
		rotationGrace  time.Duration
		bind           string
		apiToken       string
		reset          bool
		down           []string
	)
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Run every region of the system in this process, with real mutual-TLS MQTT endpoints",
		Long: `Runs the whole system on this machine: per region an IoT Core data endpoint
(mutual-TLS MQTT 3.1.1/5 with IoT Core's rules), its registry, rules engine and
functions; global tables replicated between regions; a global endpoint routing
each connection to the nearest region that is up; and the fleet HTTP API.

Ports: the global endpoint on --mqtt-port, region i (0-based, in --regions
order) on --mqtt-port+1+i, the HTTP API on --api-addr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validLogLevel(logLevel); err != nil {
				return err
			}
			if apiToken == "" {
				apiToken = os.Getenv(apiTokenEnv)
			}
			cfg := local.Config{
				Regions: regions, StateDir: stateDir(cmd), Host: bind, MQTTPort: mqttPort, APIAddr: apiAddr, APIToken: apiToken,
				CAFiles: cas, ServerCertFile: serverCert, ServerKeyFile: serverKey,
				ReplicationLag: replicationLag, APILatency: apiLatency,
				Metrics: obs.NewRecorder(), ReconcileInterval: reconcileEvery,
				Persist: true, Reset: reset, Down: down, RotationGrace: rotationGrace,
			}
			if rotationGrace <= 0 {
				return fmt.Errorf("--rotation-grace %s must be positive", rotationGrace)
			}
			if reconcileEvery < 0 {
				return fmt.Errorf("--reconcile-interval %s is negative (0: only on demand)", reconcileEvery)
			}
			if reconcileEvery == 0 {
				cfg.ReconcileInterval = -1 // 0 turns the schedule off
			}
			var err error
			if latency != "" {
				if cfg.Latency, err = router.ParseLatencies(latency); err != nil {
					return fmt.Errorf("--latency: %w", err)
				}
			}
			if cfg.Faults, err = parseFaults(faults); err != nil {
				return err
			}
			switch quotas {
			case "", "none":
			case "aws":
				cfg.Quotas = maps.Clone(memiot.AWSDefaultQuotas)
			default:
				return fmt.Errorf("--quotas %q: want aws or none", quotas)
			}
			logOut, closeLog, err := openLog(stateDir(cmd), logFile)
			if err != nil {
				return err
			}
			defer closeLog()
			cfg.Log = obs.NewLogger(logOut, logLevel)
			return runLocal(cmd, cfg, demo, logFile)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&regions, "regions", []string{"eu-west-1", "us-west-2"}, "regions to run, the primary first")
	f.IntVar(&mqttPort, "mqtt-port", 8883, "port of the global endpoint (iot.example.com); region i listens on this+1+i")
	f.StringVar(&apiAddr, "api-addr", "127.0.0.1:8080", "address of the HTTP API (one other machines can reach needs --api-token)")
	f.StringVar(&apiToken, "api-token", "", "require 'Authorization: Bearer TOKEN' on every API route but /healthz (default $"+apiTokenEnv+")")
	f.StringVar(&bind, "bind", "127.0.0.1", "address the MQTT endpoints listen on (0.0.0.0: every interface, for devices on the LAN)")
	f.StringArrayVar(&cas, "ca", nil, "a CA certificate (PEM) to register in every region with auto-registration (repeatable)")
	f.StringVar(&serverCert, "server-cert", "", "server certificate (PEM, may hold the chain) replacing the generated one")
	f.StringVar(&serverKey, "server-key", "", "key of --server-cert")
	f.StringVar(&latency, "latency", "", "client latency per region for the global endpoint, e.g. eu-west-1=20ms,us-west-2=140ms (default: --regions order)")
	f.DurationVar(&replicationLag, "replication-lag", 200*time.Millisecond, "global tables replication lag")
	f.DurationVar(&apiLatency, "api-latency", 0, "latency added to every IoT registry call")
	f.StringArrayVar(&faults, "fault", nil, "inject ServiceUnavailable errors: API=RATE, e.g. CreateThing=0.1 (repeatable)")
	f.StringVar(&quotas, "quotas", "none", "registry rate limits: aws (AWS IoT's default control-plane TPS per region) or none")
	f.BoolVar(&demo, "demo", true, "onboard a few demo devices and show what happens in each region")
	f.StringVar(&logLevel, "log-level", "info", "log level of the JSON logs: debug, info, warn or error")
	f.DurationVar(&reconcileEvery, "reconcile-interval", 30*time.Second, "how often every region's reconciler repairs drift (0: only on demand, mriot reconcile)")
	f.DurationVar(&rotationGrace, "rotation-grace", fleet.DefaultRotationGrace, "how long a device's previous certificate stays valid after a rotation (ROTATION_GRACE), e.g. 30s in tests")
	f.StringSliceVar(&down, "down", nil, "start with REGION down, as in an outage (repeatable); POST /regions/REGION/up brings it back")
	f.StringVar(&logFile, "log-file", "", "write the JSON logs of functions and endpoints to this file (default: <state-dir>/mriot.log; '-' for stderr)")
	f.BoolVar(&reset, "reset", false, "start with an empty state: delete <state-dir>/"+local.StateFile+" (devices, telemetry, queues); the PKI is kept")
	return cmd
}

func parseFaults(specs []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, s := range specs {
		op, rateText, ok := strings.Cut(s, "=")
		rate, err := strconv.ParseFloat(rateText, 64)
		if !ok || op == "" || err != nil || rate < 0 || rate > 1 {
			return nil, fmt.Errorf("--fault %q: want API=RATE with RATE in [0,1], e.g. CreateThing=0.1", s)
		}
		out[op] = rate
	}
	return out, nil
}

func runLocal(cmd *cobra.Command, cfg local.Config, demo bool, logFile string) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	start := time.Now()
	st, err := local.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(out, "mriot local: state in %s, logs in %s\n", cfg.StateDir, logName(cfg.StateDir, logFile))
	line := func(label, value string) { fmt.Fprintf(out, "  %-34s %s\n", label, value) }
	line("state (--reset empties it)", stateLine(st.State()))
	line("global endpoint (iot.example.com)", "mqtts://"+st.GlobalAddr())
	for i, r := range st.Regions() {
		line(fmt.Sprintf("region %d %s", i, r.Name), "mqtts://"+r.Broker.Addr())
	}
	if a := st.APIAddr(); a != "" {
		auth := ""
		if cfg.APIToken != "" {
			auth = " (Authorization: Bearer <token> on every route but /healthz)"
		}
		line("HTTP API", "http://"+a+auth)
	}
	// Clients verify the server with the CA that signed its certificate:
	// the local root, unless --server-cert came from another PKI.
	if cfg.ServerCertFile != "" {
		line("server CA (--cafile)", "the CA that signed "+cfg.ServerCertFile)
	} else {
		line("server CA (--cafile)", st.PKI().Path(pki.RootCertFile))
	}
	line("device certificates", "mriot pki device NAME --state-dir "+cfg.StateDir)
	fmt.Fprintf(out, "ready in %s\n", time.Since(start).Round(time.Millisecond))
	if demo {
		if err := st.Demo(ctx, out, local.DemoDevices); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(out, "try: go run ./cmd/mriot pki device test_001 --state-dir %s && mosquitto_pub -h localhost -p %s --cafile %s --cert %s/devices/test_001.crt --key %s/devices/test_001.key -q 1 -d -t i/test_001/m -i test_001 -m '{\"message\": \"Hello From Test-001\"}'\n",
			cfg.StateDir, portOf(st.GlobalAddr()), st.PKI().Path(pki.RootCertFile), cfg.StateDir, cfg.StateDir)
	}
	fmt.Fprintln(out, "serving; Ctrl-C stops")
	<-ctx.Done()
	fmt.Fprintln(out, "shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = st.WaitIdle(shutdown)
	return nil
}

// stateLine tells where the state lives and what was restored.
func stateLine(s local.StateInfo) string {
	if s.Path == "" {
		return "kept in memory only"
	}
	text := fmt.Sprintf("%s: %d devices restored", s.Path, s.Devices)
	if s.Resumed > 0 {
		text += fmt.Sprintf(", %d queued events resumed", s.Resumed)
	}
	return text
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// apiTokenEnv is where --api-token is read from when the flag is not given,
// so that the token stays out of the process list.
const apiTokenEnv = "MRIOT_API_TOKEN"

// validLogLevel refuses a --log-level that would silently log at info.
func validLogLevel(level string) error {
	switch strings.ToLower(level) {
	case "debug", "info", "warn", "warning", "error":
		return nil
	}
	return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
}
