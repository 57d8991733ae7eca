package ddbitem

import (
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// TestRotatedDeviceItem: a rotated item (NotBefore, Retiring) round-trips
// through the item and the stream image, and carries RetireDay (the
// retirement index's key: the day of its earliest RetireAt); an item
// written before rotation existed has neither.
func TestRotatedDeviceItem(t *testing.T) {
	at := time.Date(2026, 12, 7, 23, 30, 0, 123000000, time.UTC)
	d := fleet.Device{ThingName: "dev-1", CertificateID: "b", CertificatePEM: "pem-b", CACertificateID: "ca",
		NotAfter: at.AddDate(1, 0, 0), Status: fleet.StatusActive, OriginRegion: "eu-west-1", Version: 3, UpdatedAt: at,
		NotBefore: at.Add(-time.Hour),
		Retiring: []fleet.RetiringCertificate{
			{CertificateID: "a2", CertificatePEM: "pem-a2", CACertificateID: "ca", RetireAt: at.Add(24 * time.Hour)},
			{CertificateID: "a1", CertificatePEM: "pem-a1", CACertificateID: "ca", RetireAt: at},
		}}
	tests := []struct {
		name    string
		d       fleet.Device
		wantDay string // "" : no RetireDay
	}{
		{"rotated", d, "2026-12-07"},
		{"before rotation existed", fleet.Device{ThingName: "dev-2", CertificateID: "c", Status: fleet.StatusActive, Version: 1, UpdatedAt: at}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			item, err := MarshalDevice(tt.d)
			if err != nil {
				t.Fatal(err)
			}
			day, ok := item[AttrRetireDay].(*types.AttributeValueMemberS)
			if (tt.wantDay == "") != !ok || ok && day.Value != tt.wantDay {
				t.Errorf("RetireDay %v, want %q", item[AttrRetireDay], tt.wantDay)
			}
			if _, ok := item[AttrNotBefore]; ok != !tt.d.NotBefore.IsZero() {
				t.Errorf("NotBefore attribute present = %v", ok)
			}
			got, err := UnmarshalDevice(item)
			if err != nil {
				t.Fatal(err)
			}
			if !equalDevices(got, tt.d) {
				t.Errorf("item round trip\n got %+v\nwant %+v", got, tt.d)
			}
			img, err := ToStreamImage(item)
			if err != nil {
				t.Fatal(err)
			}
			back, err := DeviceFromStreamImage(img)
			if err != nil {
				t.Fatal(err)
			}
			if !equalDevices(back, tt.d) {
				t.Errorf("stream image round trip\n got %+v\nwant %+v", back, tt.d)
			}
		})
	}
}

// equalDevices compares devices with times as instants.
func equalDevices(a, b fleet.Device) bool {
	norm := func(d fleet.Device) fleet.Device {
		d.NotAfter, d.NotBefore, d.UpdatedAt = d.NotAfter.UTC(), d.NotBefore.UTC(), d.UpdatedAt.UTC()
		for i := range d.Retiring {
			d.Retiring[i].RetireAt = d.Retiring[i].RetireAt.UTC()
		}
		return d
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
