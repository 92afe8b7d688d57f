package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// v2AddrLen is the size of the address block for each v2 address family
// (high nibble of byte 13): unspec, inet, inet6, unix.
var v2AddrLen = [4]int{0, 12, 36, 216}

// VerifyCRC32C checks the CRC32C TLV of the complete PROXY v2 header raw, if
// it carries one: the checksum covers the whole header with the TLV's value
// zeroed. A header without the TLV passes; a malformed TLV list or a
// mismatch is an error.
func VerifyCRC32C(raw []byte) error {
	off, found, err := findTLV(raw, TLVCRC32C)
	if err != nil || !found {
		return err
	}
	if off+4 > len(raw) || binary.BigEndian.Uint16(raw[off-2:]) != 4 {
		return fmt.Errorf("proxy v2: CRC32C TLV is not 4 bytes long: %w", ErrMalformed)
	}
	want := binary.BigEndian.Uint32(raw[off:])
	if got := crc32cZeroed(raw, off); got != want {
		return fmt.Errorf("proxy v2: CRC32C is %#08x, header says %#08x: %w", got, want, ErrChecksum)
	}
	return nil
}

// crc32cZeroed is the CRC32C of raw with the four bytes at off taken as zero.
func crc32cZeroed(raw []byte, off int) uint32 {
	table := crc32.MakeTable(crc32.Castagnoli)
	var zero [4]byte
	c := crc32.Update(0, table, raw[:off])
	c = crc32.Update(c, table, zero[:])
	return crc32.Update(c, table, raw[off+4:])
}

// findTLV returns the offset of the value of the first TLV of type t in the
// complete v2 header raw.
func findTLV(raw []byte, t uint8) (int, bool, error) {
	if len(raw) < V2FixedLen {
		return 0, false, fmt.Errorf("proxy v2: %d bytes: %w", len(raw), ErrTruncated)
	}
	family := int(raw[13] >> 4)
	if family >= len(v2AddrLen) {
		return 0, false, fmt.Errorf("proxy v2: address family %d: %w", family, ErrMalformed)
	}
	end := V2FixedLen + int(binary.BigEndian.Uint16(raw[14:]))
	if end > len(raw) {
		return 0, false, fmt.Errorf("proxy v2: header claims %d bytes, have %d: %w", end, len(raw), ErrTruncated)
	}
	for i := V2FixedLen + v2AddrLen[family]; i < end; {
		if i+3 > end {
			return 0, false, fmt.Errorf("proxy v2: TLV header cut at offset %d: %w", i, ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(raw[i+1:]))
		if i+3+n > end {
			return 0, false, fmt.Errorf("proxy v2: TLV type %#02x at offset %d overruns the header: %w", raw[i], i, ErrMalformed)
		}
		if raw[i] == t {
			return i + 3, true, nil
		}
		i += 3 + n
	}
	return 0, false, nil
}
