package memiot

import (
	"sync"

	"github.com/mriot/mriot/internal/core/fleet"
)

// CertificateDeleted is the status OnCertificateChange reports for a
// certificate that was deleted.
const CertificateDeleted fleet.CertStatus = ""

// watchers are the functions OnCertificateChange registered.
type watchers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(id string, status fleet.CertStatus)
}

// OnCertificateChange registers fn to be told of every change of a device
// certificate's status: registered (its first status), updated to another
// status, or deleted (CertificateDeleted). It is what lets the region's data
// endpoint end the sessions of a certificate that leaves ACTIVE, however that
// happens (an API call, replicate, the reconciler, jitr).
//
// fn runs on the goroutine of the call that made the change, after the
// registry's lock is released (fn may read the registry), before the call
// returns; it must not block. Changes of one certificate made concurrently
// may be reported out of order. cancel unregisters fn.
func (r *Registry) OnCertificateChange(fn func(id string, status fleet.CertStatus)) (cancel func()) {
	w := &r.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[int]func(string, fleet.CertStatus){}
	}
	key := w.next
	w.next++
	w.fns[key] = fn
	return func() {
		w.mu.Lock()
		delete(w.fns, key)
		w.mu.Unlock()
	}
}

// certificateChanged tells the watchers; the caller does not hold r.mu.
func (r *Registry) certificateChanged(id string, status fleet.CertStatus) {
	r.watch.mu.Lock()
	fns := make([]func(string, fleet.CertStatus), 0, len(r.watch.fns))
	for _, fn := range r.watch.fns {
		fns = append(fns, fn)
	}
	r.watch.mu.Unlock()
	for _, fn := range fns {
		fn(id, status)
	}
}
