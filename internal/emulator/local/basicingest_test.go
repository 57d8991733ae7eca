package local_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// TestBasicIngest: a device publishes its telemetry straight to the data
// rule with IoT's Basic Ingest ($aws/rules/mriot_data/i/<thing>/m, no
// messaging charge), and the message is stored as one published on
// i/<thing>/m is; the policy keeps a device to its own topic and to that
// rule, and nobody can subscribe to a Basic Ingest topic.
func TestBasicIngest(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{})
	a := onboard(t, st, "dev-a")
	onboard(t, st, "dev-b")
	topic := "$aws/rules/" + local.RuleName("data") + "/i/dev-a/m"
	for _, proto := range []string{"mqttv311", "mqttv5"} {
		out, err := mosquittoPub(t, st.GlobalAddr(), a, "dev-a", topic, `{"message":"basic `+proto+`"}`, "-V", proto)
		if err != nil || !strings.Contains(out, "received PUBACK") {
			t.Fatalf("basic ingest (%s): %v\n%s", proto, err, out)
		}
	}
	denied := []struct{ name, topic string }{
		{"another device's basic ingest topic", "$aws/rules/" + local.RuleName("data") + "/i/dev-b/m"},
		{"another rule", "$aws/rules/" + local.RuleName("jitr") + "/i/dev-a/m"},
		{"a rule that does not exist", "$aws/rules/nope/i/dev-a/m"},
	}
	for _, tc := range denied {
		out, err := mosquittoPub(t, st.GlobalAddr(), a, "dev-a", tc.topic, `{"message":"spoof"}`, "-V", "mqttv5")
		if !strings.Contains(out, "received PUBACK (Mid: 1, RC:135)") { // Not authorized
			t.Errorf("%s: not refused (%v):\n%s", tc.name, err, out)
		}
	}
	if err := st.WaitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	var tel struct {
		Items []struct {
			Device  string `json:"device"`
			Message string `json:"message"` // the rule selects the message field
		} `json:"items"`
	}
	tier.Eventually(t, 10*time.Second, "both messages stored", func() error {
		if code := apiGet(t, st, "/devices/dev-a/telemetry", &tel); code != http.StatusOK || len(tel.Items) != 2 {
			return fmt.Errorf("HTTP %d, %d messages", code, len(tel.Items))
		}
		return nil
	})
	for _, it := range tel.Items {
		if it.Device != "dev-a" || !strings.HasPrefix(it.Message, "basic mqttv") {
			t.Errorf("stored %+v", it)
		}
	}
	if code := apiGet(t, st, "/devices/dev-b/telemetry", &tel); code != http.StatusOK || len(tel.Items) != 0 {
		t.Errorf("dev-b has messages: %d %+v", code, tel.Items)
	}
	// No subscriber sees a Basic Ingest message: a subscription to the
	// topics is refused (SUBACK 0x87 or 0x80).
	sub := tier.Tool(t, "mosquitto_sub")
	host, port, _ := strings.Cut(st.GlobalAddr(), ":")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outb, _ := exec.CommandContext(ctx, sub, "-h", strings.Replace(host, "127.0.0.1", "localhost", 1), "-p", port, "--cafile", a.cafile, "--cert", a.cert, "--key", a.key,
		"-i", "dev-a", "-t", "$aws/rules/#", "-d", "-C", "1", "-W", "2", "-V", "mqttv5").CombinedOutput()
	out := string(outb)
	if !strings.Contains(out, "Subscribed (mid: 1): 135") && !strings.Contains(out, "Subscribed (mid: 1): 128") {
		t.Errorf("subscription to $aws/rules/# was not refused:\n%s", out)
	}
}
