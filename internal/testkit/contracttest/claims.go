package contracttest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// claimOp is one call of a contract.Claims scenario, at base+at. A claim lasts until
// its now+lease; a done mark until base+until.
type claimOp struct {
	op    string // "claim", "done" or "release"
	reg   string
	at    time.Duration
	lease time.Duration    // claim only
	until time.Duration    // done only
	want  fleet.ClaimState // claim only
}

func claimAt(reg string, at, lease time.Duration, want fleet.ClaimState) claimOp {
	return claimOp{op: "claim", reg: reg, at: at, lease: lease, want: want}
}

func doneUntil(reg string, until time.Duration) claimOp {
	return claimOp{op: "done", reg: reg, until: until}
}

func release(reg string) claimOp { return claimOp{op: "release", reg: reg} }

// TestClaims runs the contract.Claims contract against fresh claims tables.
func Claims(t *testing.T, newClaims func(t *testing.T) contract.Claims) {
	const (
		r1, r2 = "1700000000000", "1700000999000"
		lease  = time.Minute
		doneW  = 2 * time.Minute
	)
	s := time.Second
	tests := []struct {
		name string
		ops  []claimOp
	}{
		{"first claim is taken", []claimOp{claimAt(r1, 0, lease, fleet.ClaimTaken)}},
		{"second claim while held", []claimOp{claimAt(r1, 0, lease, fleet.ClaimTaken), claimAt(r1, s, lease, fleet.ClaimHeld)}},
		{"held until just before expiry", []claimOp{claimAt(r1, 0, lease, fleet.ClaimTaken), claimAt(r1, lease-s, lease, fleet.ClaimHeld)}},
		{"after expiry (ExpiresAt <= now) the claim is taken again", []claimOp{
			claimAt(r1, 0, lease, fleet.ClaimTaken), claimAt(r1, lease, lease, fleet.ClaimTaken), claimAt(r1, lease+s, lease, fleet.ClaimHeld)}},
		{"done then claim", []claimOp{claimAt(r1, 0, lease, fleet.ClaimTaken), doneUntil(r1, doneW), claimAt(r1, s, lease, fleet.ClaimDone)}},
		{"done without a claim (unconditional)", []claimOp{doneUntil(r1, doneW), claimAt(r1, s, lease, fleet.ClaimDone)}},
		{"done expired", []claimOp{doneUntil(r1, doneW), claimAt(r1, doneW-s, lease, fleet.ClaimDone), claimAt(r1, doneW, lease, fleet.ClaimTaken)}},
		{"another registration replaces a held claim", []claimOp{
			claimAt(r1, 0, lease, fleet.ClaimTaken), claimAt(r2, s, lease, fleet.ClaimTaken), claimAt(r2, 2*s, lease, fleet.ClaimHeld)}},
		{"another registration replaces a done mark", []claimOp{
			doneUntil(r1, doneW), claimAt(r2, s, lease, fleet.ClaimTaken), claimAt(r2, 2*s, lease, fleet.ClaimHeld)}},
		{"an empty registration is a registration like any other", []claimOp{
			claimAt("", 0, lease, fleet.ClaimTaken), claimAt("", s, lease, fleet.ClaimHeld), doneUntil("", doneW),
			claimAt("", 2*s, lease, fleet.ClaimDone), claimAt(r1, 3*s, lease, fleet.ClaimTaken)}},
		{"release of the own claim: the next claim is taken", []claimOp{
			claimAt(r1, 0, lease, fleet.ClaimTaken), release(r1), claimAt(r1, s, lease, fleet.ClaimTaken)}},
		{"release with nothing stored", []claimOp{release(r1), claimAt(r1, 0, lease, fleet.ClaimTaken)}},
		{"release leaves a done mark", []claimOp{
			claimAt(r1, 0, lease, fleet.ClaimTaken), doneUntil(r1, doneW), release(r1), claimAt(r1, s, lease, fleet.ClaimDone)}},
		{"release leaves another registration's claim", []claimOp{
			claimAt(r2, 0, lease, fleet.ClaimTaken), release(r1), claimAt(r2, s, lease, fleet.ClaimHeld)}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClaims(t)
			cert := fmt.Sprintf("%064s", randomSuffix(t))
			// Whole seconds from now: the table stores epoch seconds, and a
			// real table's TTL must not remove the items during the test.
			base := time.Now().Truncate(time.Second).Add(time.Hour)
			for i, op := range tt.ops {
				switch op.op {
				case "claim":
					now := base.Add(op.at)
					got, err := c.Claim(ctx, cert, op.reg, now, now.Add(op.lease))
					wantErr(t, fmt.Sprintf("step %d: Claim(%q) at +%v", i, op.reg, op.at), err, nil)
					if got != op.want {
						t.Fatalf("step %d: Claim(%q) at +%v = %v, want %v", i, op.reg, op.at, got, op.want)
					}
				case "done":
					wantErr(t, fmt.Sprintf("step %d: Done(%q)", i, op.reg), c.Done(ctx, cert, op.reg, base.Add(op.until)), nil)
				case "release":
					wantErr(t, fmt.Sprintf("step %d: Release(%q)", i, op.reg), c.Release(ctx, cert, op.reg), nil)
				default:
					t.Fatalf("step %d: unknown op %q", i, op.op)
				}
			}
		})
	}
}
