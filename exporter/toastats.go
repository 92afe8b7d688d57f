package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// StandardTOARows are the eight rows every TOA module prints first, in
// this order (existing scripts read them); newer modules add rows after.
var StandardTOARows = [...]string{
	"syn_recv_sock_toa",
	"syn_recv_sock_no_toa",
	"getname_toa_ok",
	"getname_toa_mismatch",
	"getname_toa_bypass",
	"getname_toa_empty",
	"ip6_address_alloc",
	"ip6_address_free",
}

// TOAStats is the content of /proc/net/toa_stats.
type TOAStats struct {
	// CPUs are the CPU numbers of the columns, in the file's order.
	CPUs []int
	// Rows are the counters in the file's order.
	Rows []TOARow
}

// TOARow is one counter of /proc/net/toa_stats.
type TOARow struct {
	Name   string
	PerCPU []uint64 // one value per TOAStats.CPUs entry
	Total  uint64   // sum of PerCPU (wrapping like the kernel's u64)
}

// Row returns the row called name, or nil.
func (s *TOAStats) Row(name string) *TOARow {
	for i := range s.Rows {
		if s.Rows[i].Name == name {
			return &s.Rows[i]
		}
	}
	return nil
}

// ErrTOAStatsFormat is wrapped by every error of ParseTOAStats.
var ErrTOAStatsFormat = errors.New("malformed toa_stats")

func formatErr(line int, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrTOAStatsFormat, line, fmt.Sprintf(format, args...))
}

// ParseTOAStats parses the content of /proc/net/toa_stats: a header line of
// CPUn columns (any white space between them), then rows of a counter name
// and one unsigned decimal number per column. Blank lines are ignored.
//
// It rejects, with an error wrapping ErrTOAStatsFormat: a missing or bad
// header, a row whose column count differs from the header's, a number that
// is not an unsigned decimal, a name that cannot be part of a metric name
// ([A-Za-z_][A-Za-z0-9_]*), a name seen twice, a file with no rows, and a
// file whose last line has no newline (the kernel always ends its lines, so
// that is a truncated read).
func ParseTOAStats(b []byte) (*TOAStats, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty file", ErrTOAStatsFormat)
	}
	if b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%w: truncated: the last line has no newline", ErrTOAStatsFormat)
	}
	s := &TOAStats{}
	lineNo := 0
	header := true
	seen := make(map[string]struct{}, 16)
	var fields [][]byte
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		line := b[:nl]
		b = b[nl+1:]
		lineNo++
		fields = splitFields(line, fields[:0])
		if len(fields) == 0 {
			continue
		}
		if header {
			header = false
			s.CPUs = make([]int, 0, len(fields))
			for _, f := range fields {
				if !bytes.HasPrefix(f, []byte("CPU")) {
					return nil, formatErr(lineNo, "header column %q is not CPUn", f)
				}
				n, err := strconv.ParseUint(string(f[3:]), 10, 31)
				if err != nil {
					return nil, formatErr(lineNo, "header column %q is not CPUn", f)
				}
				s.CPUs = append(s.CPUs, int(n))
			}
			continue
		}
		name := fields[0]
		if !validName(name) {
			return nil, formatErr(lineNo, "counter name %q is not [A-Za-z_][A-Za-z0-9_]*", name)
		}
		if got := len(fields) - 1; got != len(s.CPUs) {
			return nil, formatErr(lineNo, "row %s has %d values for %d CPUs", name, got, len(s.CPUs))
		}
		if _, dup := seen[string(name)]; dup {
			return nil, formatErr(lineNo, "row %s appears twice", name)
		}
		row := TOARow{Name: string(name), PerCPU: make([]uint64, len(s.CPUs))}
		seen[row.Name] = struct{}{}
		for i, f := range fields[1:] {
			v, ok := parseUint(f)
			if !ok {
				return nil, formatErr(lineNo, "row %s: value %q is not an unsigned decimal", name, f)
			}
			row.PerCPU[i] = v
			row.Total += v
		}
		s.Rows = append(s.Rows, row)
	}
	if header {
		return nil, fmt.Errorf("%w: no header line", ErrTOAStatsFormat)
	}
	if len(s.Rows) == 0 {
		return nil, fmt.Errorf("%w: no counter rows", ErrTOAStatsFormat)
	}
	return s, nil
}

// splitFields appends the white-space separated fields of line to dst.
func splitFields(line []byte, dst [][]byte) [][]byte {
	i := 0
	for i < len(line) {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		start := i
		for i < len(line) && !isSpace(line[i]) {
			i++
		}
		if i > start {
			dst = append(dst, line[start:i])
		}
	}
	return dst
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' }

func validName(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for i, c := range b {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// parseUint parses an unsigned decimal without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
