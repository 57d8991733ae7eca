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

// MaxPolicyNameLen is AWS IoT's limit on a policy name.
const MaxPolicyNameLen = 128

// ValidatePolicyName checks name against AWS IoT's policy-name pattern
// [\w+=,.@-]{1,128} (letters, digits, underscore and +=,.@-). The error
// wraps ErrInvalid.
func ValidatePolicyName(name string) error {
	if len(name) == 0 {
		return fmt.Errorf("policy name is empty: %w", ErrInvalid)
	}
	if len(name) > MaxPolicyNameLen {
		return fmt.Errorf("policy name is %d bytes, more than %d: %w", len(name), MaxPolicyNameLen, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !policyNameByte(c) {
			return fmt.Errorf("policy name %q has %q at %d, allowed are [\\w+=,.@-]: %w", name, name[i], i, ErrInvalid)
		}
	}
	return nil
}

func policyNameByte(c byte) bool {
	switch {
	case c == ':':
		return false
	case thingNameByte(c):
		return true
	}
	return c == '+' || c == '=' || c == ',' || c == '.' || c == '@'
}
