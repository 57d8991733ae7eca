package local

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/mriot/mriot/internal/fake/memiot"
)

// ErrConfig is wrapped by every error of a Config that cannot run.
var ErrConfig = errors.New("invalid configuration")

// regionName is the shape of an AWS region name (eu-west-1, us-gov-east-1).
var regionName = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]$`)

// validate refuses what cannot run, or would run other than asked, with an
// error that names the setting.
func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	for _, r := range c.Regions {
		if !regionName.MatchString(r) {
			return bad("region %q is not an AWS region name such as eu-west-1", r)
		}
	}
	if c.ReplicationLag < 0 {
		return bad("replication lag %v is negative", c.ReplicationLag)
	}
	if c.APILatency < 0 {
		return bad("API latency %v is negative", c.APILatency)
	}
	for r, d := range c.Latency {
		if d < 0 {
			return bad("latency of %s %v is negative", r, d)
		}
	}
	for op := range c.Faults {
		if !memiot.IsOperation(op) {
			return bad("fault on %q, which is no IoT API operation the registry answers (%s)", op, strings.Join(memiot.Operations, ", "))
		}
	}
	for op := range c.Quotas {
		if !memiot.IsOperation(op) {
			return bad("quota on %q, which is no IoT API operation the registry answers", op)
		}
	}
	if c.MQTTPort < 0 || c.MQTTPort+len(c.Regions) > 65535 {
		return bad("MQTT port %d: the global endpoint and the %d regions need ports %d to %d", c.MQTTPort, len(c.Regions), c.MQTTPort, c.MQTTPort+len(c.Regions))
	}
	if strings.Contains(c.Host, ":") && net.ParseIP(c.Host) == nil {
		return bad("bind address %q: want a host or an IP address, without a port", c.Host)
	}
	if c.APIAddr != "" {
		host, _, err := net.SplitHostPort(c.APIAddr)
		if err != nil {
			return bad("API address %q: %v", c.APIAddr, err)
		}
		if !loopback(host) && c.APIToken == "" {
			return bad("API address %q is reachable from other machines, and the API can revoke devices and register CAs: give it a token (--api-token), or listen on 127.0.0.1", c.APIAddr)
		}
	}
	return nil
}

// loopback reports whether host names this machine only.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
