package rules

import (
	"bufio"
	"fmt"
	"io"
)

// Export writes the rules to w in canonical form, one per line. Parsing the
// output with the same groups gives a Set that exports the same text.
func (s *Set) Export(w io.Writer) error {
	return writeLines(w, s.Rules)
}

// Export writes the groups to w in canonical form, one per line.
func (gs Groups) Export(w io.Writer) error {
	return writeLines(w, gs)
}

// writeLines writes each item and a newline.
func writeLines[T fmt.Stringer](w io.Writer, items []T) error {
	bw := bufio.NewWriter(w)
	for _, it := range items {
		bw.WriteString(it.String())
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
