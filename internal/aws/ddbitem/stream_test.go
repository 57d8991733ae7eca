package ddbitem

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestStreamValueConversion(t *testing.T) {
	tests := []struct {
		name     string
		av       types.AttributeValue
		wantJSON string
	}{
		{"S", &types.AttributeValueMemberS{Value: "hé"}, `{"S":"hé"}`},
		{"N", &types.AttributeValueMemberN{Value: "-12.5"}, `{"N":"-12.5"}`},
		{"B", &types.AttributeValueMemberB{Value: []byte{0, 1, 255}}, `{"B":"AAH/"}`},
		{"BOOL", &types.AttributeValueMemberBOOL{Value: true}, `{"BOOL":true}`},
		{"NULL", &types.AttributeValueMemberNULL{Value: true}, `{"NULL":true}`},
		{"SS", &types.AttributeValueMemberSS{Value: []string{"a", "b"}}, `{"SS":["a","b"]}`},
		{"NS", &types.AttributeValueMemberNS{Value: []string{"1", "2.5"}}, `{"NS":["1","2.5"]}`},
		{"BS", &types.AttributeValueMemberBS{Value: [][]byte{{1}, {2, 3}}}, `{"BS":["AQ==","AgM="]}`},
		{"L", &types.AttributeValueMemberL{Value: []types.AttributeValue{
			&types.AttributeValueMemberS{Value: "x"}, &types.AttributeValueMemberN{Value: "1"},
			&types.AttributeValueMemberL{Value: []types.AttributeValue{}},
		}}, `{"L":[{"S":"x"},{"N":"1"},{"L":[]}]}`},
		{"M", &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"k": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"n": &types.AttributeValueMemberNULL{Value: true}}},
		}}, `{"M":{"k":{"M":{"n":{"NULL":true}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sv, err := ToStreamValue(tt.av)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(sv)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wantJSON {
				t.Errorf("stream JSON %s, want %s", got, tt.wantJSON)
			}
			// Lambda decodes the JSON; decoding must give the same value back.
			var decoded events.DynamoDBAttributeValue
			if err := json.Unmarshal(got, &decoded); err != nil {
				t.Fatal(err)
			}
			back, err := FromStreamValue(decoded)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.av) {
				t.Errorf("round trip gave %#v, want %#v", back, tt.av)
			}
		})
	}
}

func TestToStreamValueUnknown(t *testing.T) {
	if _, err := ToStreamValue(&types.UnknownUnionMember{Tag: "X"}); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if _, err := ToStreamImage(map[string]types.AttributeValue{"a": nil}); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("nil value: err = %v, want ErrInvalid", err)
	}
	if img, err := ToStreamImage(nil); img != nil || err != nil {
		t.Fatalf("nil item: %v, %v", img, err)
	}
}

func TestDeviceFromStreamImage(t *testing.T) {
	d := fleet.Device{ThingName: "dev", CertificateID: "c", Status: fleet.StatusActive, Version: 7,
		UpdatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	item, err := MarshalDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ToStreamImage(item)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	var decoded map[string]events.DynamoDBAttributeValue
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	got, err := DeviceFromStreamImage(decoded)
	if err != nil {
		t.Fatal(err)
	}
	if got.ThingName != d.ThingName || got.Version != 7 || got.Status != d.Status || !got.UpdatedAt.Equal(d.UpdatedAt) {
		t.Errorf("decoded %+v, want %+v", got, d)
	}
	if _, err := DeviceFromStreamImage(nil); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("nil image: %v, want ErrInvalid", err)
	}
}

func FuzzStreamImageJSON(f *testing.F) {
	f.Add(`{"ThingName":{"S":"d"},"Version":{"N":"1"}}`)
	f.Add(`{"a":{"L":[{"M":{"b":{"BS":["AQ=="]}}}]}}`)
	f.Add(`{"a":{"X":1}}`)
	f.Add(`{"ThingName":{"S":"d"},"Version":{"N":"2"},"NotBefore":{"S":"2026-01-02T03:04:05Z"},"RetireDay":{"S":"2026-12-07"},` +
		`"Retiring":{"L":[{"M":{"CertificateId":{"S":"a"},"CertificatePem":{"S":"p"},"CaCertificateId":{"S":"c"},"RetireAt":{"S":"2026-12-07T10:00:00Z"}}}]}}`)
	f.Fuzz(func(t *testing.T, raw string) {
		var img map[string]events.DynamoDBAttributeValue
		if json.Unmarshal([]byte(raw), &img) != nil {
			return
		}
		item, err := FromStreamImage(img)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		again, err := ToStreamImage(item)
		if err != nil {
			t.Fatalf("an image that converted cannot convert back: %v", err)
		}
		a, _ := json.Marshal(img)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("round trip %s -> %s", a, b)
		}
		_, _ = DeviceFromStreamImage(img)
	})
}
