package replicate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mriot/mriot/internal/core/fleet"
)

// FuzzParseEvent feeds arbitrary payloads to the EventBridge/stream-record
// decoder and to the handler: never a panic; a refused payload wraps
// ErrInvalid and is dropped without an error.
func FuzzParseEvent(f *testing.F) {
	fixtures(f)
	files, _ := filepath.Glob("testdata/*.json")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	d := device(fleet.StatusActive, origin, 1)
	f.Add(envelope("INSERT", &d, thing))
	f.Add(envelope("REMOVE", nil, thing))
	f.Add([]byte(`{"detail":{"eventName":"MODIFY","dynamodb":{"Keys":{"ThingName":{"S":"x"}},"OldImage":{"CertificateId":{"S":"zz"}}}}}`))
	f.Add([]byte(`{"detail":{"eventName":"INSERT","dynamodb":{"Keys":{"ThingName":{"S":"dev-1#revocation"}}}}}`))
	f.Add([]byte(`{"detail":{"eventName":"INSERT","dynamodb":{"Keys":{"ThingName":{"S":"#revocation"}}}}}`))
	f.Add([]byte(`{"detail":null}`))
	f.Add([]byte(`[]`))
	w, err := newWorld()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(w.close)
	f.Fuzz(func(t *testing.T, payload []byte) {
		tr, err := ParseEvent(payload)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if _, herr := w.h.Invoke(context.Background(), payload); herr != nil {
				t.Fatalf("an invalid event was returned for retry: %v", herr)
			}
			return
		}
		if fleet.ValidateThingName(tr.ThingName) != nil {
			t.Fatalf("accepted thing name %q", tr.ThingName)
		}
		if tr.OldCertificateID != "" && !isCertID(tr.OldCertificateID) {
			t.Fatalf("accepted certificate id %q", tr.OldCertificateID)
		}
	})
}
