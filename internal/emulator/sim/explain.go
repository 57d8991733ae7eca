package sim

import (
	"errors"
	"io"
	"strings"
	"syscall"
)

// ClosedWithoutConnack says what a device sees when IoT Core drops its
// connection before answering CONNECT: paho reports it as "network Error :
// EOF" or a reset.
const ClosedWithoutConnack = "the server closed the connection without a CONNACK " +
	"(IoT Core does this while JITR onboards a new certificate, and for good to a revoked, " +
	"inactive or unknown one)"

// Explain turns an MQTT client's connection error into what a person needs
// to read: the server closing the connection is the expected first answer
// to a new device, not a "network Error : EOF". Other errors are returned
// whole.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || strings.HasSuffix(s, ": EOF") || s == "EOF" ||
		strings.Contains(s, "connection reset by peer") || strings.Contains(s, "broken pipe") {
		return ClosedWithoutConnack
	}
	if strings.Contains(s, "connection refused") {
		return "nothing listens there (the endpoint is down, or the port is wrong)"
	}
	return s
}
