package ddbitem

import (
	"encoding/base64"
	"fmt"

	"github.com/mriot/mriot/internal/core/fleet"
)

// MessageCursor is the opaque cursor of a telemetry page that ends with
// the message of sort key sk: the next page starts below it.
func MessageCursor(sk string) string { return base64.RawURLEncoding.EncodeToString([]byte(sk)) }

// ParseMessageCursor returns the sort key a MessageCursor carries; "" for
// the first page. Anything else is ErrInvalid.
func ParseMessageCursor(cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(b) == 0 || len(b) > 256 {
		return "", fmt.Errorf("telemetry cursor %q: not one this API gave: %w", cursor, fleet.ErrInvalid)
	}
	return string(b), nil
}
