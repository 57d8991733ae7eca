package contracttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Commands runs the contract.Commands contract against fresh commands
// tables.
func Commands(t *testing.T, newCommands func(t *testing.T) contract.Commands) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const thing = "cmd-dev-1"
	mk := func(n int, ttl time.Duration) fleet.Command {
		created := base.Add(time.Duration(n) * time.Second)
		return fleet.Command{ThingName: thing, ID: fmt.Sprintf("%013d-%016x", created.UnixMilli(), n),
			Payload: json.RawMessage(fmt.Sprintf(`{"n":%d,"op":"reboot"}`, n)), Status: fleet.CommandQueued,
			CreatedAt: created, ExpiresAt: created.Add(ttl), Version: 1}
	}
	ctx := context.Background()

	t.Run("create get and duplicate create", func(t *testing.T) {
		c := newCommands(t)
		cmd := mk(1, time.Hour)
		if err := c.Create(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		got, err := c.Get(ctx, thing, cmd.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != cmd.ID || string(got.Payload) != string(cmd.Payload) || got.Status != fleet.CommandQueued ||
			!got.CreatedAt.Equal(cmd.CreatedAt) || !got.ExpiresAt.Equal(cmd.ExpiresAt) || got.Deliveries != 0 {
			t.Fatalf("Get = %+v, want %+v", got, cmd)
		}
		if err := c.Create(ctx, cmd); !errors.Is(err, fleet.ErrAlreadyExists) {
			t.Fatalf("second Create = %v, want ErrAlreadyExists", err)
		}
		if _, err := c.Get(ctx, thing, "0000000000000-nothing"); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("Get unknown = %v, want ErrNotFound", err)
		}
		if _, err := c.Get(ctx, thing, "a/b"); !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("Get bad id = %v, want ErrInvalid", err)
		}
	})

	t.Run("claim once per session, merged into the view", func(t *testing.T) {
		c := newCommands(t)
		cmd := mk(1, time.Hour)
		if err := c.Create(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Minute)
		steps := []struct {
			session string
			want    error
		}{{"s1", nil}, {"s1", fleet.ErrAlreadyExists}, {"s2", nil}, {"s2", fleet.ErrAlreadyExists}}
		for _, st := range steps {
			err := c.Claim(ctx, thing, cmd.ID, st.session, "eu-west-1", at, cmd.ExpiresAt)
			if (st.want == nil) != (err == nil) || st.want != nil && !errors.Is(err, st.want) {
				t.Fatalf("Claim %s = %v, want %v", st.session, err, st.want)
			}
		}
		got, err := c.Get(ctx, thing, cmd.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != fleet.CommandSent || got.Deliveries != 2 {
			t.Fatalf("after two claims (no MarkSent): %s with %d deliveries, want SENT with 2", got.Status, got.Deliveries)
		}
		if err := c.Unclaim(ctx, thing, cmd.ID, "s2"); err != nil {
			t.Fatal(err)
		}
		if err := c.Unclaim(ctx, thing, cmd.ID, "s2"); err != nil {
			t.Fatalf("second Unclaim = %v, want nil", err)
		}
		if err := c.Claim(ctx, thing, cmd.ID, "s2", "us-west-2", at, cmd.ExpiresAt); err != nil {
			t.Fatalf("Claim after Unclaim = %v", err)
		}
		if err := c.MarkSent(ctx, thing, cmd.ID, "s2", "us-west-2", at); err != nil {
			t.Fatal(err)
		}
		got, _ = c.Get(ctx, thing, cmd.ID)
		if got.Status != fleet.CommandSent || got.SentRegion != "us-west-2" || got.SentSession != "s2" || !got.SentAt.Equal(at) || got.Deliveries != 2 {
			t.Fatalf("after MarkSent: %+v", got)
		}
	})

	t.Run("ack is absorbing and refused after expiry", func(t *testing.T) {
		c := newCommands(t)
		cmd, late := mk(1, time.Hour), mk(2, time.Minute)
		for _, x := range []fleet.Command{cmd, late} {
			if err := c.Create(ctx, x); err != nil {
				t.Fatal(err)
			}
		}
		at := base.Add(10 * time.Second)
		if err := c.Ack(ctx, thing, cmd.ID, at, `{"ok":true}`); err != nil {
			t.Fatal(err)
		}
		if err := c.Ack(ctx, thing, cmd.ID, at.Add(time.Second), `{"ok":false}`); err != nil {
			t.Fatalf("second Ack = %v, want nil", err)
		}
		if err := c.MarkSent(ctx, thing, cmd.ID, "s9", "eu-west-1", at); !errors.Is(err, fleet.ErrConditionFailed) {
			t.Fatalf("MarkSent after ack = %v, want ErrConditionFailed", err)
		}
		if err := c.Expire(ctx, thing, cmd.ID, cmd.ExpiresAt); !errors.Is(err, fleet.ErrConditionFailed) {
			t.Fatalf("Expire after ack = %v, want ErrConditionFailed", err)
		}
		got, _ := c.Get(ctx, thing, cmd.ID)
		if got.Status != fleet.CommandAcked || !got.AckedAt.Equal(at) || got.Result != `{"ok":true}` {
			t.Fatalf("after acks: %+v", got)
		}
		if err := c.Ack(ctx, thing, late.ID, late.ExpiresAt, ""); !errors.Is(err, fleet.ErrConditionFailed) {
			t.Fatalf("Ack at expiry = %v, want ErrConditionFailed", err)
		}
		if err := c.Ack(ctx, thing, "0000000000000-nothing", at, ""); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("Ack unknown = %v, want ErrNotFound", err)
		}
	})

	t.Run("expire only once past ExpiresAt and not after", func(t *testing.T) {
		c := newCommands(t)
		cmd := mk(1, time.Minute)
		if err := c.Create(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		if err := c.Expire(ctx, thing, cmd.ID, cmd.ExpiresAt.Add(-time.Millisecond)); !errors.Is(err, fleet.ErrConditionFailed) {
			t.Fatalf("Expire early = %v, want ErrConditionFailed", err)
		}
		if err := c.MarkSent(ctx, thing, cmd.ID, "s1", "eu-west-1", cmd.ExpiresAt); !errors.Is(err, fleet.ErrConditionFailed) {
			t.Fatalf("MarkSent at expiry = %v, want ErrConditionFailed", err)
		}
		if err := c.Expire(ctx, thing, cmd.ID, cmd.ExpiresAt); err != nil {
			t.Fatal(err)
		}
		if err := c.Expire(ctx, thing, cmd.ID, cmd.ExpiresAt); !errors.Is(err, fleet.ErrConditionFailed) {
			t.Fatalf("second Expire = %v, want ErrConditionFailed", err)
		}
		if err := c.Expire(ctx, thing, "0000000000000-nothing", cmd.ExpiresAt); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("Expire unknown = %v, want ErrNotFound", err)
		}
		if err := c.MarkSent(ctx, thing, "0000000000000-nothing", "s1", "eu-west-1", base); !errors.Is(err, fleet.ErrNotFound) {
			t.Fatalf("MarkSent unknown = %v, want ErrNotFound", err)
		}
		got, _ := c.Get(ctx, thing, cmd.ID)
		if got.Status != fleet.CommandExpired {
			t.Fatalf("status %s, want EXPIRED", got.Status)
		}
	})

	t.Run("page newest first with records and open oldest first", func(t *testing.T) {
		c := newCommands(t)
		var all []fleet.Command
		for i := range 7 {
			cmd := mk(i, time.Hour)
			all = append(all, cmd)
			if err := c.Create(ctx, cmd); err != nil {
				t.Fatal(err)
			}
			// Records between the commands' keys.
			if err := c.Claim(ctx, thing, cmd.ID, "s1", "eu-west-1", base, cmd.ExpiresAt); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Ack(ctx, thing, all[3].ID, base.Add(time.Minute), ""); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(ctx, fleet.Command{ThingName: "cmd-dev-other", ID: all[0].ID, Payload: json.RawMessage(`1`),
			Status: fleet.CommandQueued, CreatedAt: base, ExpiresAt: base.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var seen []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			got, next, err := c.Page(ctx, thing, 3, cursor)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				seen = append(seen, g.ID)
				if g.Deliveries != 1 {
					t.Fatalf("%s: %d deliveries in the page, want 1", g.ID, g.Deliveries)
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if len(seen) != len(all) {
			t.Fatalf("paged %d commands, want %d: %v", len(seen), len(all), seen)
		}
		for i, id := range seen {
			if want := all[len(all)-1-i].ID; id != want {
				t.Fatalf("page order: item %d is %s, want %s", i, id, want)
			}
		}
		if _, _, err := c.Page(ctx, thing, 3, "not a cursor!"); !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("Page with a bad cursor = %v, want ErrInvalid", err)
		}
		open, err := c.Open(ctx, thing)
		if err != nil {
			t.Fatal(err)
		}
		if len(open) != 6 || open[0].ID != all[0].ID || open[5].ID != all[6].ID {
			t.Fatalf("Open = %d commands (first %v), want 6 oldest first without the acked one", len(open), open)
		}
		for _, o := range open {
			if o.ID == all[3].ID {
				t.Fatal("Open lists the ACKED command")
			}
		}
	})
}
