package ddbitem

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestClaimRoundTrip(t *testing.T) {
	for _, c := range []Claim{
		{CertificateID: "abc", Registered: "1700000000000", State: ClaimStateClaimed, ExpiresAt: time.Unix(1700000060, 0).UTC()},
		{CertificateID: "abc", Registered: "", State: ClaimStateDone, ExpiresAt: time.Unix(1700000120, 0).UTC()},
	} {
		item, err := MarshalClaim(c)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{AttrCertificateID: "S", AttrRegistered: "S", AttrState: "S", AttrExpiresAt: "N"}
		if len(item) != len(want) {
			t.Fatalf("item has %d attributes, want %d: %v", len(item), len(want), item)
		}
		for name, typ := range want {
			if got := avType(item[name]); got != typ {
				t.Errorf("%s: type %q, want %q", name, got, typ)
			}
		}
		if v := item[AttrExpiresAt].(*types.AttributeValueMemberN).Value; v != "1700000060" && v != "1700000120" {
			t.Errorf("ExpiresAt = %s, want epoch seconds", v)
		}
		got, err := UnmarshalClaim(item)
		if err != nil {
			t.Fatal(err)
		}
		if got != c {
			t.Errorf("round trip: got %+v, want %+v", got, c)
		}
	}
}

func TestClaimInvalid(t *testing.T) {
	if _, err := MarshalClaim(Claim{CertificateID: "abc", State: "MAYBE"}); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("marshal with a bad state: %v, want ErrInvalid", err)
	}
	if _, err := MarshalClaim(Claim{State: ClaimStateDone}); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("marshal without a certificate id: %v, want ErrInvalid", err)
	}
	good, err := MarshalClaim(Claim{CertificateID: "abc", State: ClaimStateDone, ExpiresAt: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, drop := range []string{AttrCertificateID, AttrRegistered, AttrState, AttrExpiresAt} {
		item := map[string]types.AttributeValue{}
		for k, v := range good {
			if k != drop {
				item[k] = v
			}
		}
		if _, err := UnmarshalClaim(item); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("item without %s: %v, want ErrInvalid", drop, err)
		}
	}
	good[AttrExpiresAt] = &types.AttributeValueMemberN{Value: "soon"}
	if _, err := UnmarshalClaim(good); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("item with a bad ExpiresAt: %v, want ErrInvalid", err)
	}
}
