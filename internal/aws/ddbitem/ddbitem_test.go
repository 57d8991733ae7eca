package ddbitem

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestDeviceRoundTrip(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.UTC)
	d := fleet.Device{
		ThingName: "dev-1", CertificateID: "abc", CertificatePEM: "PEM", CACertificateID: "ca",
		NotAfter: now.Add(time.Hour), Status: fleet.StatusActive, OriginRegion: "eu-west-1",
		Version: 3, UpdatedAt: now,
	}
	item, err := MarshalDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		AttrThingName: "S", AttrCertificateID: "S", AttrCertificatePEM: "S", AttrCACertificateID: "S",
		AttrNotAfter: "S", AttrStatus: "S", AttrOriginRegion: "S", AttrVersion: "N", AttrUpdatedAt: "S",
	}
	if len(item) != len(want) {
		t.Fatalf("item has %d attributes, want %d: %v", len(item), len(want), item)
	}
	for name, typ := range want {
		if got := avType(item[name]); got != typ {
			t.Errorf("%s: type %q, want %q", name, got, typ)
		}
	}
	if v := item[AttrVersion].(*types.AttributeValueMemberN).Value; v != "3" {
		t.Errorf("Version = %s, want 3", v)
	}
	got, err := UnmarshalDevice(item)
	if err != nil {
		t.Fatal(err)
	}
	if got.ThingName != d.ThingName || got.CertificateID != d.CertificateID || got.CertificatePEM != d.CertificatePEM ||
		got.CACertificateID != d.CACertificateID || !got.NotAfter.Equal(d.NotAfter) || got.Status != d.Status ||
		got.OriginRegion != d.OriginRegion || got.Version != d.Version || !got.UpdatedAt.Equal(d.UpdatedAt) {
		t.Errorf("round trip: got %+v, want %+v", got, d)
	}
	if k := DeviceKey("dev-1"); k[AttrThingName].(*types.AttributeValueMemberS).Value != "dev-1" || len(k) != 1 {
		t.Errorf("DeviceKey = %v", k)
	}
}

func TestUnmarshalDeviceInvalid(t *testing.T) {
	tests := []struct {
		name string
		item map[string]types.AttributeValue
	}{
		{"empty", map[string]types.AttributeValue{}},
		{"version not a number", map[string]types.AttributeValue{
			AttrThingName: &types.AttributeValueMemberS{Value: "x"},
			AttrVersion:   &types.AttributeValueMemberS{Value: "three"},
		}},
		{"bad time", map[string]types.AttributeValue{
			AttrThingName: &types.AttributeValueMemberS{Value: "x"},
			AttrNotAfter:  &types.AttributeValueMemberS{Value: "yesterday"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := UnmarshalDevice(tt.item); !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestMessageRoundTrip(t *testing.T) {
	exp := time.Unix(1700000000, 0).UTC()
	tests := []struct {
		name    string
		in      fleet.Message
		wantSK  string
		wantTTL bool
	}{
		{"explicit sort key", fleet.Message{Device: "d", SortKey: fleet.SortKey(5, "a"), Timestamp: 5, ID: "a",
			Region: "us-west-2", Payload: []byte(`{"t":1}`), ExpiresAt: exp}, "0000000000005#a", true},
		{"derived sort key, no ttl", fleet.Message{Device: "d", Timestamp: 1700000000123, ID: "b-1",
			Region: "eu-west-1", Payload: []byte(`"x"`)}, "1700000000123#b-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			item, err := MarshalMessage(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			wantTypes := map[string]string{AttrPK: "S", AttrSK: "S", AttrDevice: "S", AttrRegion: "S",
				AttrMessage: "S", AttrTs: "N", AttrID: "S"}
			if tt.wantTTL {
				wantTypes[AttrExpiresAt] = "N"
			}
			if len(item) != len(wantTypes) {
				t.Fatalf("item = %v, want attributes %v", item, wantTypes)
			}
			for name, typ := range wantTypes {
				if got := avType(item[name]); got != typ {
					t.Errorf("%s: type %q, want %q", name, got, typ)
				}
			}
			if sk := item[AttrSK].(*MemberS).Value; sk != tt.wantSK {
				t.Errorf("SK = %q, want %q", sk, tt.wantSK)
			}
			if msg := item[AttrMessage].(*MemberS).Value; msg != string(tt.in.Payload) {
				t.Errorf("Message = %q, want %q", msg, tt.in.Payload)
			}
			if tt.wantTTL {
				if n := item[AttrExpiresAt].(*MemberN).Value; n != "1700000000" {
					t.Errorf("ExpiresAt = %s, want epoch seconds 1700000000", n)
				}
			}
			got, err := UnmarshalMessage(item)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.in
			want.SortKey = tt.wantSK
			if got.Device != want.Device || got.SortKey != want.SortKey || got.Timestamp != want.Timestamp ||
				got.ID != want.ID || got.Region != want.Region || string(got.Payload) != string(want.Payload) ||
				!got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("round trip: got %+v, want %+v", got, want)
			}
		})
	}
	if _, err := MarshalMessage(fleet.Message{}); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("message without device: err = %v, want ErrInvalid", err)
	}
}

type (
	MemberS = types.AttributeValueMemberS
	MemberN = types.AttributeValueMemberN
)

func avType(av types.AttributeValue) string {
	switch av.(type) {
	case *types.AttributeValueMemberS:
		return "S"
	case *types.AttributeValueMemberN:
		return "N"
	case nil:
		return ""
	default:
		return "other"
	}
}

func FuzzUnmarshalMessage(f *testing.F) {
	f.Add("d", "0000000000001#a", "{}", "1", "x", "5")
	f.Add("", "", "", "", "", "")
	f.Add("d", "s", "m", "notanumber", "i", "1e3")
	f.Fuzz(func(t *testing.T, pk, sk, msg, ts, id, exp string) {
		item := map[string]types.AttributeValue{
			AttrPK: &MemberS{Value: pk}, AttrSK: &MemberS{Value: sk}, AttrMessage: &MemberS{Value: msg},
			AttrTs: &MemberN{Value: ts}, AttrID: &MemberS{Value: id}, AttrExpiresAt: &MemberN{Value: exp},
		}
		m, err := UnmarshalMessage(item)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if m.Device != pk || m.SortKey != sk || string(m.Payload) != msg {
			t.Fatalf("decoded %+v from pk=%q sk=%q msg=%q", m, pk, sk, msg)
		}
	})
}
