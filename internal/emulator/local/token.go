package local

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
)

// requireToken lets through only requests with "Authorization: Bearer
// token", but GET /healthz (for load balancers and scripts that wait for
// the stack). An empty token lets everything through.
func requireToken(token string, next http.Handler, log *slog.Logger) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		got := []byte(strings.TrimSpace(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			log.Warn("api: request without the API token refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="mriot local"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"missing or wrong API token: send Authorization: Bearer <token>"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
