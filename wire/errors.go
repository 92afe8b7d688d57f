package wire

import "errors"

// Sentinel errors. Every error a parser in this package returns matches
// exactly one of them with errors.Is, and carries the details in its text.
var (
	// ErrNoHeader: the bytes do not start with the header's signature.
	ErrNoHeader = errors.New("no header")
	// ErrTruncated: the input ended before the header was complete.
	ErrTruncated = errors.New("truncated header")
	// ErrMalformed: the header is complete but invalid.
	ErrMalformed = errors.New("malformed header")
	// ErrChecksum: a PROXY v2 header's CRC32C TLV does not match its contents.
	ErrChecksum = errors.New("CRC32C mismatch")
)
