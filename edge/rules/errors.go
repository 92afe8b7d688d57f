package rules

import (
	"fmt"
	"strings"
)

// LineError is a problem found on one line of a rules or origin-groups file.
type LineError struct {
	File string
	Line int
	Msg  string
}

// Error returns "FILE:LINE: Msg".
func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// ErrorList holds the problems of a file, in line order. Parse, ParseGroups
// and Load return one when a file has bad lines.
type ErrorList []*LineError

// Error returns the errors, one per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors, so errors.As can find a *LineError.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// add records msg as the problem of line n of file.
func (l *ErrorList) add(file string, n int, msg string) {
	*l = append(*l, &LineError{File: file, Line: n, Msg: msg})
}

// err returns l as an error, or nil when it is empty.
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
