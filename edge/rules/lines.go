package rules

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxLine is the longest line read, in bytes including its line end. The
// longest sensible rule, every forwarding port listed one by one, is about
// 380 KB.
const maxLine = 1 << 20

const byteOrderMark = "\uFEFF"

// lineReader reads a file line by line. Unlike bufio.Scanner it carries on
// after a line that is too long, so later lines are still checked.
type lineReader struct {
	br      *bufio.Reader
	buf     []byte
	num     int    // number of the current line, from 1
	text    string // the current line without its line end
	tooLong bool   // the current line was longer than maxLine; text is empty
	done    bool
	err     error // read error other than io.EOF
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReader(r)}
}

// next moves to the next line and reports whether there is one.
func (lr *lineReader) next() bool {
	if lr.done {
		return false
	}
	lr.buf, lr.tooLong = lr.buf[:0], false
	seen := false
	for {
		chunk, err := lr.br.ReadSlice('\n')
		seen = seen || len(chunk) > 0
		lr.keep(chunk)
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			lr.done = true
			if !seen {
				return false
			}
		default:
			lr.done, lr.err = true, err
			return false
		}
		lr.num++
		lr.text = lr.lineText()
		return true
	}
}

// keep adds chunk to the current line unless the line is too long.
func (lr *lineReader) keep(chunk []byte) {
	if lr.tooLong {
		return
	}
	if len(lr.buf)+len(chunk) > maxLine {
		lr.tooLong, lr.buf = true, lr.buf[:0]
		return
	}
	lr.buf = append(lr.buf, chunk...)
}

// lineText returns the current line without "\n" or "\r\n", and without a
// byte order mark at the start of the file.
func (lr *lineReader) lineText() string {
	s := string(lr.buf)
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	if lr.num == 1 {
		s = strings.TrimPrefix(s, byteOrderMark)
	}
	return s
}

// readErr wraps a read error with the file name.
func readErr(file string, err error) error {
	return fmt.Errorf("%s: read: %w", file, err)
}

// scanLines calls fn for every line of r that is neither blank nor a
// comment, with the line trimmed of surrounding spaces and tabs. It records
// over-long lines in errs and returns a read error, if any.
func scanLines(r io.Reader, file string, errs *ErrorList, fn func(n int, line string)) error {
	lr := newLineReader(r)
	for lr.next() {
		if lr.tooLong {
			errs.add(file, lr.num, fmt.Sprintf("line is longer than %d bytes", maxLine))
			continue
		}
		line := strings.Trim(lr.text, " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		fn(lr.num, line)
	}
	if lr.err != nil {
		return readErr(file, lr.err)
	}
	return nil
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// cutField returns the first field of s, separated by spaces or tabs, and
// the text after it (which starts with a blank unless it is empty).
func cutField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " \t")
	i := strings.IndexFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// countFields returns the number of space- or tab-separated fields in s.
func countFields(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if !isBlank(s[i]) && (i == 0 || isBlank(s[i-1])) {
			n++
		}
	}
	return n
}
