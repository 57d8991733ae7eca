package local_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// TestRestartWithAnAddedRegion: a region added to --regions between two
// runs gets the inventory from an existing replica, as a new DynamoDB
// replica does, and replicate fills its registry from the records: a
// device onboarded before connects there at once.
func TestRestartWithAnAddedRegion(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	dir := t.TempDir()
	st, err := local.Start(context.Background(), local.Config{StateDir: dir, Persist: true, APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	d := onboard(t, st, "roamer")
	st.Close()

	st = startStack(t, local.Config{StateDir: dir, Persist: true, Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}})
	if s := st.State(); s.Devices != 1 || s.Things["ap-southeast-2"] != 0 || s.Things["us-west-2"] != 1 {
		t.Fatalf("restored %+v, want 1 device, and things in the regions kept only", s)
	}
	waitLive(t, st, "roamer")
	out, err := mosquittoPub(t, st.Region("ap-southeast-2").Broker.Addr(), d, d.name, "i/"+d.name+"/m", `{"message":"new region"}`)
	if err != nil || !strings.Contains(out, "received CONNACK (0)") || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("the first connection to the added region: %v\n%s", err, out)
	}
}
