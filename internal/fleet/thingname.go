package fleet

import "fmt"

// MaxThingNameLen is AWS IoT's limit on a thing name.
const MaxThingNameLen = 128

// ValidateThingName checks name against AWS IoT's thing-name pattern
// [a-zA-Z0-9:_-]{1,128}. The error wraps ErrInvalid.
func ValidateThingName(name string) error {
	if len(name) == 0 {
		return fmt.Errorf("thing name is empty: %w", ErrInvalid)
	}
	if len(name) > MaxThingNameLen {
		return fmt.Errorf("thing name is %d bytes, more than %d: %w", len(name), MaxThingNameLen, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		if !thingNameByte(name[i]) {
			return fmt.Errorf("thing name %q has %q at %d, allowed are [a-zA-Z0-9:_-]: %w", name, name[i], i, ErrInvalid)
		}
	}
	return nil
}

func thingNameByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == ':' || c == '_' || c == '-':
		return true
	}
	return false
}
