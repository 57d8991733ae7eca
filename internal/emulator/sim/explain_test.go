package sim

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
)

func TestExplain(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("network Error : EOF"), ClosedWithoutConnack},
		{io.EOF, ClosedWithoutConnack},
		{fmt.Errorf("connect: %w", io.ErrUnexpectedEOF), ClosedWithoutConnack},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), ClosedWithoutConnack},
		{errors.New("read tcp 127.0.0.1:5->127.0.0.1:8883: read: connection reset by peer"), ClosedWithoutConnack},
		{errors.New("dial tcp 127.0.0.1:8883: connect: connection refused"), "nothing listens there (the endpoint is down, or the port is wrong)"},
		{errors.New("not Authorized"), "not Authorized"},
		{errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of something long)"),
			"tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of something long)"},
	}
	for _, tc := range cases {
		if got := Explain(tc.err); got != tc.want {
			t.Errorf("Explain(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
