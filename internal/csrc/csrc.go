package csrc

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// File is a C source file's text with its comments removed.
type File struct {
	path string
	text string
}

var (
	blockComment = regexp.MustCompile(`(?s)/\*.*?\*/`)
	lineComment  = regexp.MustCompile(`//[^\n]*`)
)

// Read reads path and strips its comments.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("csrc: %w", err)
	}
	text := blockComment.ReplaceAllString(string(b), "")
	return &File{path: path, text: lineComment.ReplaceAllString(text, "")}, nil
}

// Enum returns the members of `enum NAME { ... };` in order with their
// values (implicit ones counted on from the last explicit value).
func (f *File) Enum(name string) ([]Member, error) {
	body, err := f.braces(`enum\s+` + regexp.QuoteMeta(name) + `\s*\{`)
	if err != nil {
		return nil, err
	}
	var out []Member
	next := int64(0)
	for _, item := range strings.Split(body, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, val, explicit := strings.Cut(item, "=")
		id = strings.TrimSpace(id)
		if explicit {
			v, err := strconv.ParseInt(strings.TrimSpace(val), 0, 64)
			if err != nil {
				return nil, fmt.Errorf("csrc: %s: enum %s: member %s: value %q is not a number", f.path, name, id, val)
			}
			next = v
		}
		out = append(out, Member{Name: id, Value: next})
		next++
	}
	return out, nil
}

// Member is one enumerator.
type Member struct {
	Name  string
	Value int64
}

// Define returns the replacement text of `#define NAME TEXT`, with the
// quotes of a string literal removed.
func (f *File) Define(name string) (string, error) {
	re := regexp.MustCompile(`(?m)^#define\s+` + regexp.QuoteMeta(name) + `\s+(.+?)\s*$`)
	m := re.FindStringSubmatch(f.text)
	if m == nil {
		return "", fmt.Errorf("csrc: %s: no #define %s", f.path, name)
	}
	if s, err := strconv.Unquote(m[1]); err == nil {
		return s, nil
	}
	return m[1], nil
}

// Designated returns the `[INDEX] = "string"` pairs of the array
// initializer that follows the declaration of NAME, by index name.
func (f *File) Designated(name string) (map[string]string, error) {
	body, err := f.braces(`\b` + regexp.QuoteMeta(name) + `\b[^=;{]*=\s*\{`)
	if err != nil {
		return nil, err
	}
	pair := regexp.MustCompile(`\[\s*(\w+)\s*\]\s*=\s*("(?:[^"\\]|\\.)*")`)
	out := make(map[string]string)
	for _, m := range pair.FindAllStringSubmatch(body, -1) {
		s, err := strconv.Unquote(m[2])
		if err != nil {
			return nil, fmt.Errorf("csrc: %s: %s[%s]: %w", f.path, name, m[1], err)
		}
		out[m[1]] = s
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("csrc: %s: %s has no [INDEX] = \"string\" entries", f.path, name)
	}
	return out, nil
}

// braces returns the text between the '{' that ends the first match of
// open and its closing '}'.
func (f *File) braces(open string) (string, error) {
	loc := regexp.MustCompile(open).FindStringIndex(f.text)
	if loc == nil {
		return "", fmt.Errorf("csrc: %s: nothing matches %q", f.path, open)
	}
	depth := 1
	for i := loc[1]; i < len(f.text); i++ {
		switch f.text[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return f.text[loc[1]:i], nil
			}
		}
	}
	return "", fmt.Errorf("csrc: %s: no closing brace after %q", f.path, open)
}
