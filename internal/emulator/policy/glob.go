package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mriot/mriot/internal/core/fleet"
)

// elem is one element of a compiled pattern: a literal rune, or the wildcard
// * (any run of runes, possibly empty) or ? (exactly one rune).
type elem struct {
	r    rune
	kind byte // 0 literal, '*' or '?'
}

type pattern []elem

// errUnset: the pattern names a variable the request does not carry.
var errUnset = fmt.Errorf("policy variable not set: %w", fleet.ErrInvalid)

// compile turns a pattern into elements. With subst, ${name} is replaced by
// vars[name] as literal text (an unset variable is errUnset) and the escapes
// ${*}, ${?}, ${$} are a literal *, ? and $; a "${" that is never closed is
// literal text. Without subst, ${...} is ordinary text.
func compile(s string, vars Vars, subst bool) (pattern, error) {
	p := make(pattern, 0, len(s))
	for i := 0; i < len(s); {
		if subst && strings.HasPrefix(s[i:], "${") {
			if end := strings.IndexByte(s[i+2:], '}'); end >= 0 {
				name := s[i+2 : i+2+end]
				i += 2 + end + 1
				switch name {
				case "*", "?", "$":
					p = appendLiteral(p, name)
					continue
				}
				v, ok := vars[name]
				if !ok {
					return nil, fmt.Errorf("${%s}: %w", name, errUnset)
				}
				p = appendLiteral(p, v)
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '*', '?':
			p = append(p, elem{kind: byte(r)})
		default:
			p = append(p, elem{r: r})
		}
		i += size
	}
	return p, nil
}

func appendLiteral(p pattern, s string) pattern {
	for _, r := range s {
		p = append(p, elem{r: r})
	}
	return p
}

// match reports whether all of s matches the pattern: greedy wildcard
// matching that backtracks to the last *, O(len(p)·len(s)) at worst.
func (p pattern) match(s string) bool {
	str := []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(str) {
		switch {
		case pi < len(p) && (p[pi].kind == '?' || p[pi].kind == 0 && p[pi].r == str[si]):
			pi++
			si++
		case pi < len(p) && p[pi].kind == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi].kind == '*' {
		pi++
	}
	return pi == len(p)
}

// Match reports whether all of s matches the IAM glob pattern (* and ?, no
// variables).
func Match(pattern, s string) bool {
	p, _ := compile(pattern, nil, false)
	return p.match(s)
}
