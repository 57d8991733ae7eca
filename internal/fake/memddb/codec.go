package memddb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/fake/journal"
)

// The journal's records are a compact binary form of the replica's
// entries and pending replications: what the ingest path writes for every
// message, so neither JSON nor reflection. Every length is a uvarint, every
// string its length and bytes; an item is its attribute count and, for each
// attribute, its name and value; a value is a tag byte and its payload.
// Decoding checks every length against what is left, so a damaged record
// is journal.ErrCorrupt, never a panic or a huge allocation.

// codecVersion is the first byte of every entry and replication record.
const codecVersion = 1

// maxDepth bounds the nesting of lists and maps a record may hold
// (DynamoDB allows 32 levels).
const maxDepth = 64

// Value tags.
const (
	tagS     = 'S'
	tagN     = 'N'
	tagB     = 'B'
	tagTrue  = 'T'
	tagFalse = 'F'
	tagNULL  = '0'
	tagSS    = 's'
	tagNS    = 'n'
	tagBS    = 'b'
	tagL     = 'L'
	tagM     = 'M'
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendItem encodes an item; a nil item is a zero count, as is an empty
// one (the callers tell them apart with a flag).
func appendItem(b []byte, item map[string]types.AttributeValue) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(item)))
	for k, v := range item {
		b = appendString(b, k)
		var err error
		if b, err = appendValue(b, v); err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
	}
	return b, nil
}

func appendValue(b []byte, av types.AttributeValue) ([]byte, error) {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return appendString(append(b, tagS), v.Value), nil
	case *types.AttributeValueMemberN:
		return appendString(append(b, tagN), v.Value), nil
	case *types.AttributeValueMemberB:
		return appendBytes(append(b, tagB), v.Value), nil
	case *types.AttributeValueMemberBOOL:
		if v.Value {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case *types.AttributeValueMemberNULL:
		return append(b, tagNULL), nil
	case *types.AttributeValueMemberSS:
		b = binary.AppendUvarint(append(b, tagSS), uint64(len(v.Value)))
		for _, s := range v.Value {
			b = appendString(b, s)
		}
		return b, nil
	case *types.AttributeValueMemberNS:
		b = binary.AppendUvarint(append(b, tagNS), uint64(len(v.Value)))
		for _, s := range v.Value {
			b = appendString(b, s)
		}
		return b, nil
	case *types.AttributeValueMemberBS:
		b = binary.AppendUvarint(append(b, tagBS), uint64(len(v.Value)))
		for _, s := range v.Value {
			b = appendBytes(b, s)
		}
		return b, nil
	case *types.AttributeValueMemberL:
		b = binary.AppendUvarint(append(b, tagL), uint64(len(v.Value)))
		for i, e := range v.Value {
			var err error
			if b, err = appendValue(b, e); err != nil {
				return nil, fmt.Errorf("list element %d: %w", i, err)
			}
		}
		return b, nil
	case *types.AttributeValueMemberM:
		return appendItem(append(b, tagM), v.Value)
	default:
		return nil, fmt.Errorf("attribute value of type %T cannot be stored", av)
	}
}

// decoder reads a record; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), journal.ErrCorrupt)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("record ends early")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad length")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of elements each at least minSize bytes long, and
// refuses one the rest of the record cannot hold.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minSize) {
		d.fail("count %d exceeds the record", n)
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d exceeds the record", n)
		return nil
	}
	out := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return out
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) item(depth int) map[string]types.AttributeValue {
	n := d.count(2) // a name's length and a value's tag at least
	item := make(map[string]types.AttributeValue, n)
	for range n {
		k := d.string()
		v := d.value(depth)
		if d.err != nil {
			return nil
		}
		if _, dup := item[k]; dup {
			d.fail("attribute %q twice", k)
			return nil
		}
		item[k] = v
	}
	return item
}

func (d *decoder) value(depth int) types.AttributeValue {
	if depth > maxDepth {
		d.fail("values nested deeper than %d", maxDepth)
		return nil
	}
	switch tag := d.byte(); tag {
	case tagS:
		return &types.AttributeValueMemberS{Value: d.string()}
	case tagN:
		return &types.AttributeValueMemberN{Value: d.string()}
	case tagB:
		return &types.AttributeValueMemberB{Value: d.bytes()}
	case tagTrue, tagFalse:
		return &types.AttributeValueMemberBOOL{Value: tag == tagTrue}
	case tagNULL:
		return &types.AttributeValueMemberNULL{Value: true}
	case tagSS, tagNS:
		n := d.count(1)
		ss := make([]string, 0, n)
		for range n {
			ss = append(ss, d.string())
		}
		if tag == tagSS {
			return &types.AttributeValueMemberSS{Value: ss}
		}
		return &types.AttributeValueMemberNS{Value: ss}
	case tagBS:
		n := d.count(1)
		bs := make([][]byte, 0, n)
		for range n {
			bs = append(bs, d.bytes())
		}
		return &types.AttributeValueMemberBS{Value: bs}
	case tagL:
		n := d.count(1)
		l := make([]types.AttributeValue, 0, n)
		for range n {
			l = append(l, d.value(depth+1))
		}
		return &types.AttributeValueMemberL{Value: l}
	case tagM:
		return &types.AttributeValueMemberM{Value: d.item(depth + 1)}
	default:
		if d.err == nil {
			d.fail("unknown value tag %q", tag)
		}
		return nil
	}
}

func (d *decoder) end(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the %s", len(d.b), what)
	}
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	return nil
}

// appendVersion appends what entries and replications share: the
// last-writer-wins version and the item (flag 0: a tombstone).
func appendVersion(b []byte, ts time.Time, origin string, item []byte) []byte {
	b = binary.AppendVarint(b, ts.UnixNano())
	b = appendString(b, origin)
	if item == nil {
		return append(b, 0)
	}
	return append(append(b, 1), item...)
}

func (d *decoder) version() (time.Time, string, map[string]types.AttributeValue) {
	ns := d.varint()
	origin := d.string()
	var item map[string]types.AttributeValue
	switch flag := d.byte(); flag {
	case 0:
	case 1:
		item = d.item(0)
	default:
		if d.err == nil {
			d.fail("unknown item flag %d", flag)
		}
	}
	if d.err == nil && origin == "" {
		d.fail("no origin region")
	}
	return time.Unix(0, ns), origin, item
}

// encodeItem is the stored form of an item (nil for a tombstone).
func encodeItem(item map[string]types.AttributeValue) ([]byte, error) {
	if item == nil {
		return nil, nil
	}
	return appendItem(make([]byte, 0, 64), item)
}

// entryKey is an entry's journal key: the encoded hash key's length, the
// hash key and the range key.
func entryKey(h, r string) []byte {
	k := binary.AppendUvarint(make([]byte, 0, 1+len(h)+len(r)), uint64(len(h)))
	return append(append(k, h...), r...)
}

func decodeEntryKey(k []byte) (string, string, error) {
	d := decoder{b: k}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > uint64(len(d.b))) {
		d.fail("hash key length %d", n)
	}
	if d.err != nil {
		return "", "", fmt.Errorf("entry key: %w", d.err)
	}
	h, r := string(d.b[:n]), string(d.b[n:])
	if !bytes.Equal(entryKey(h, r), k) {
		// A length in more bytes than it needs: another key than the
		// one writes of this entry use.
		return "", "", fmt.Errorf("entry key %x is not in canonical form: %w", k, journal.ErrCorrupt)
	}
	return h, r, nil
}

// encodeEntry is an entry's journal value; item is encodeItem's.
func encodeEntry(ts time.Time, origin string, item []byte) []byte {
	return appendVersion(append(make([]byte, 0, 16+len(origin)+len(item)), codecVersion), ts, origin, item)
}

func decodeEntry(b []byte) (*entry, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != codecVersion {
		d.fail("record version %d", v)
	}
	ts, origin, item := d.version()
	if err := d.end("entry"); err != nil {
		return nil, err
	}
	return &entry{item: item, ts: ts, origin: origin}, nil
}

// encodeReplication is a pending replication's journal value.
func encodeReplication(h, r string, ts time.Time, origin string, item []byte) []byte {
	b := append(make([]byte, 0, 24+len(h)+len(r)+len(origin)+len(item)), codecVersion)
	b = appendString(appendString(b, h), r)
	return appendVersion(b, ts, origin, item)
}

func decodeReplication(b []byte) (replication, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != codecVersion {
		d.fail("record version %d", v)
	}
	h := d.string()
	r := d.string()
	if d.err == nil && h == "" {
		d.fail("no hash key")
	}
	ts, origin, item := d.version()
	if err := d.end("replication"); err != nil {
		return replication{}, err
	}
	return replication{hash: h, rng: r, item: item, ts: ts, origin: origin}, nil
}
