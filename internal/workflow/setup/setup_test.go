package setup

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// fakeIoT records the event configuration updates.
type fakeIoT struct {
	enabled  map[string]bool
	updates  []map[string]iottypes.Configuration
	endpoint string
	err      error
}

func (f *fakeIoT) DescribeEventConfigurations(context.Context, *iot.DescribeEventConfigurationsInput, ...func(*iot.Options)) (*iot.DescribeEventConfigurationsOutput, error) {
	if f.err != nil {
		return nil, f.err
	}
	out := map[string]iottypes.Configuration{}
	for k, v := range f.enabled {
		out[k] = iottypes.Configuration{Enabled: v}
	}
	return &iot.DescribeEventConfigurationsOutput{EventConfigurations: out}, nil
}

func (f *fakeIoT) UpdateEventConfigurations(_ context.Context, in *iot.UpdateEventConfigurationsInput, _ ...func(*iot.Options)) (*iot.UpdateEventConfigurationsOutput, error) {
	f.updates = append(f.updates, in.EventConfigurations)
	for k, v := range in.EventConfigurations {
		f.enabled[k] = v.Enabled
	}
	return &iot.UpdateEventConfigurationsOutput{}, nil
}

func (f *fakeIoT) DescribeEndpoint(_ context.Context, in *iot.DescribeEndpointInput, _ ...func(*iot.Options)) (*iot.DescribeEndpointOutput, error) {
	if aws.ToString(in.EndpointType) != "iot:Data-ATS" {
		return nil, errors.New("want the iot:Data-ATS endpoint")
	}
	return &iot.DescribeEndpointOutput{EndpointAddress: aws.String(f.endpoint)}, nil
}

// fakeTables answers DescribeTable from a script: one answer per call, the
// last one repeated.
type fakeTables struct {
	answers []func() (*dynamodb.DescribeTableOutput, error)
	calls   int
}

func (f *fakeTables) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	i := min(f.calls, len(f.answers)-1)
	f.calls++
	return f.answers[i]()
}

func notFound() (*dynamodb.DescribeTableOutput, error) {
	return nil, &ddbtypes.ResourceNotFoundException{Message: aws.String("no table")}
}

func table(status ddbtypes.TableStatus, stream string) func() (*dynamodb.DescribeTableOutput, error) {
	return func() (*dynamodb.DescribeTableOutput, error) {
		t := &ddbtypes.TableDescription{TableStatus: status}
		if stream != "" {
			t.LatestStreamArn = aws.String(stream)
		}
		return &dynamodb.DescribeTableOutput{Table: t}, nil
	}
}

const streamARN = "arn:aws:dynamodb:us-west-2:123456789012:table/mriot-device-inventory/stream/2026-01-01T00:00:00.000"

const presenceStreamARN = "arn:aws:dynamodb:us-west-2:123456789012:table/mriot-presence/stream/2026-01-01T00:00:00.000"

const commandsStreamARN = "arn:aws:dynamodb:us-west-2:123456789012:table/mriot-commands/stream/2026-01-01T00:00:00.000"

func event(rt cfn.RequestType, props map[string]any) cfn.Event {
	return cfn.Event{RequestType: rt, RequestID: "req-1", PhysicalResourceID: "phys-1", LogicalResourceID: "Setup", ResourceProperties: props}
}

func props(regions ...any) map[string]any {
	return map[string]any{
		"ServiceToken":       "arn:aws:lambda:us-west-2:123456789012:function:setup",
		"InventoryTableName": "mriot-device-inventory",
		"Regions":            regions,
		"EventTypes":         []any{"CERTIFICATE", "CA_CERTIFICATE"},
	}
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name        string
		ev          cfn.Event
		enabled     map[string]bool
		tables      []func() (*dynamodb.DescribeTableOutput, error)
		wantErr     error
		wantErrText string
		wantData    map[string]any
		wantUpdates []map[string]iottypes.Configuration
	}{
		{
			name:    "create enables the missing events and returns the stream",
			ev:      event(cfn.RequestCreate, props("eu-west-1", "us-west-2")),
			enabled: map[string]bool{"CERTIFICATE": false, "THING": true},
			tables:  []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN)},
			wantData: map[string]any{
				AttrInventoryStreamArn: streamARN, AttrDataEndpoint: "abc-ats.iot.us-west-2.amazonaws.com",
			},
			wantUpdates: []map[string]iottypes.Configuration{{"CERTIFICATE": {Enabled: true}, "CA_CERTIFICATE": {Enabled: true}}},
		},
		{
			name: "with a presence table, its replica's stream too",
			ev: event(cfn.RequestCreate, func() map[string]any {
				p := props("eu-west-1", "us-west-2")
				p["PresenceTableName"] = "mriot-presence"
				return p
			}()),
			enabled: map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true},
			tables: []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN),
				notFound, table(ddbtypes.TableStatusActive, presenceStreamARN)},
			wantData: map[string]any{
				AttrInventoryStreamArn: streamARN, AttrPresenceStreamArn: presenceStreamARN, AttrDataEndpoint: "abc-ats.iot.us-west-2.amazonaws.com",
			},
		},
		{
			name: "with a commands table, its replica's stream too",
			ev: event(cfn.RequestCreate, func() map[string]any {
				p := props("eu-west-1", "us-west-2")
				p["PresenceTableName"] = "mriot-presence"
				p["CommandsTableName"] = "mriot-commands"
				return p
			}()),
			enabled: map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true},
			tables: []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN),
				table(ddbtypes.TableStatusActive, presenceStreamARN), table(ddbtypes.TableStatusActive, commandsStreamARN)},
			wantData: map[string]any{
				AttrInventoryStreamArn: streamARN, AttrPresenceStreamArn: presenceStreamARN, AttrCommandsStreamArn: commandsStreamARN,
				AttrDataEndpoint: "abc-ats.iot.us-west-2.amazonaws.com",
			},
		},
		{
			name:    "update with events on already changes nothing",
			ev:      event(cfn.RequestUpdate, props("eu-west-1", "us-west-2")),
			enabled: map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true},
			tables:  []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN)},
			wantData: map[string]any{
				AttrInventoryStreamArn: streamARN, AttrDataEndpoint: "abc-ats.iot.us-west-2.amazonaws.com",
			},
		},
		{
			name:    "waits for the replica to appear, become active and get a stream",
			ev:      event(cfn.RequestCreate, props("eu-west-1", "us-west-2")),
			enabled: map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true},
			tables: []func() (*dynamodb.DescribeTableOutput, error){
				notFound, table(ddbtypes.TableStatusCreating, ""), table(ddbtypes.TableStatusActive, ""), table(ddbtypes.TableStatusActive, streamARN),
			},
			wantData: map[string]any{
				AttrInventoryStreamArn: streamARN, AttrDataEndpoint: "abc-ats.iot.us-west-2.amazonaws.com",
			},
		},
		{
			name:        "a replica that never appears fails with a hint",
			ev:          event(cfn.RequestCreate, props("eu-west-1", "us-west-2")),
			enabled:     map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true},
			tables:      []func() (*dynamodb.DescribeTableOutput, error){notFound},
			wantErr:     fleet.ErrUnavailable,
			wantErrText: "deploy the primary region eu-west-1 first",
		},
		{
			name:        "a region outside Regions is refused before any change",
			ev:          event(cfn.RequestCreate, props("eu-west-1", "ap-south-1")),
			enabled:     map[string]bool{},
			tables:      []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN)},
			wantErr:     fleet.ErrInvalid,
			wantErrText: "us-west-2 is not in Regions",
		},
		{
			name:        "bad properties",
			ev:          event(cfn.RequestCreate, map[string]any{"Regions": []any{"us-west-2"}}),
			enabled:     map[string]bool{},
			tables:      []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN)},
			wantErr:     fleet.ErrInvalid,
			wantErrText: "InventoryTableName",
		},
		{
			name:    "delete changes nothing and keeps the physical id",
			ev:      event(cfn.RequestDelete, props("eu-west-1", "us-west-2")),
			enabled: map[string]bool{"CERTIFICATE": true},
			tables:  []func() (*dynamodb.DescribeTableOutput, error){notFound},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fi := &fakeIoT{enabled: tt.enabled, endpoint: "abc-ats.iot.us-west-2.amazonaws.com"}
			ft := &fakeTables{answers: tt.tables}
			h := &Handler{IoT: fi, Tables: ft, Region: "us-west-2", StreamWait: 200 * time.Millisecond, Poll: time.Millisecond}
			id, data, err := h.Handle(context.Background(), tt.ev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantErrText) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.wantErr, tt.wantErrText)
				}
				if strings.Contains(tt.wantErrText, "not in Regions") && len(fi.updates) != 0 {
					t.Errorf("refused region changed event configurations: %v", fi.updates)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.ev.RequestType == cfn.RequestDelete {
				if id != "phys-1" || data != nil || len(fi.updates) != 0 || ft.calls != 0 {
					t.Fatalf("delete: id=%q data=%v updates=%v describe calls=%d; want the old id and no calls", id, data, fi.updates, ft.calls)
				}
				return
			}
			if id != "mriot-setup-us-west-2-mriot-device-inventory" {
				t.Errorf("physical id = %q", id)
			}
			if !reflect.DeepEqual(data, tt.wantData) {
				t.Errorf("data = %v, want %v", data, tt.wantData)
			}
			if !reflect.DeepEqual(fi.updates, tt.wantUpdates) {
				t.Errorf("event configuration updates = %v, want %v", fi.updates, tt.wantUpdates)
			}
			if !fi.enabled["CERTIFICATE"] || !fi.enabled["CA_CERTIFICATE"] {
				t.Errorf("events after setup = %v, want CERTIFICATE and CA_CERTIFICATE on", fi.enabled)
			}
		})
	}
}

func TestParseProperties(t *testing.T) {
	tests := []struct {
		name    string
		in      map[string]any
		want    Properties
		wantErr bool
	}{
		{"list values", map[string]any{"InventoryTableName": " inv ", "Regions": []any{"eu-west-1", " us-west-2"}, "EventTypes": []any{"CERTIFICATE"}},
			Properties{InventoryTableName: "inv", Regions: []string{"eu-west-1", "us-west-2"}, EventTypes: []iottypes.EventType{iottypes.EventTypeCertificate}}, false},
		{"comma string and no event types", map[string]any{"InventoryTableName": "inv", "Regions": "eu-west-1,,us-west-2"},
			Properties{InventoryTableName: "inv", Regions: []string{"eu-west-1", "us-west-2"}}, false},
		{"no regions", map[string]any{"InventoryTableName": "inv", "Regions": []any{}}, Properties{}, true},
		{"region not a string", map[string]any{"InventoryTableName": "inv", "Regions": []any{1.0}}, Properties{}, true},
		{"unknown event type", map[string]any{"InventoryTableName": "inv", "Regions": "eu-west-1", "EventTypes": []any{"CERTIFICATES"}}, Properties{}, true},
		{"table not a string", map[string]any{"InventoryTableName": []any{"x"}, "Regions": "eu-west-1"}, Properties{}, true},
		{"presence table", map[string]any{"InventoryTableName": "inv", "PresenceTableName": " pres ", "Regions": "eu-west-1"},
			Properties{InventoryTableName: "inv", PresenceTableName: "pres", Regions: []string{"eu-west-1"}}, false},
		{"presence table empty", map[string]any{"InventoryTableName": "inv", "PresenceTableName": "", "Regions": "eu-west-1"}, Properties{}, true},
		{"presence table not a string", map[string]any{"InventoryTableName": "inv", "PresenceTableName": 3.0, "Regions": "eu-west-1"}, Properties{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProperties(tt.in)
			if tt.wantErr {
				if !errors.Is(err, fleet.ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseProperties = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseProperties(f *testing.F) {
	f.Add("inv", "eu-west-1,us-west-2", "CERTIFICATE")
	f.Add("", ",", "")
	f.Fuzz(func(t *testing.T, table, regions, types string) {
		p, err := ParseProperties(map[string]any{"InventoryTableName": table, "Regions": regions, "EventTypes": types})
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if p.InventoryTableName == "" || len(p.Regions) == 0 {
			t.Fatalf("accepted empty properties: %+v", p)
		}
	})
}
