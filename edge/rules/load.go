package rules

import (
	"io"
	"os"
)

// Load reads the rules file at rulesPath, and the origin-groups file at
// groupsPath unless it is empty. Errors name the files by the paths given.
// When the groups file has bad lines, only its errors are returned.
func Load(rulesPath, groupsPath string) (*Set, error) {
	var groups Groups
	if groupsPath != "" {
		var err error
		groups, err = parseFile(groupsPath, ParseGroups)
		if err != nil {
			return nil, err
		}
	}
	return parseFile(rulesPath, func(r io.Reader, file string) (*Set, error) {
		return Parse(r, file, groups)
	})
}

// parseFile opens path and parses it with parse.
func parseFile[T any](path string, parse func(io.Reader, string) (T, error)) (T, error) {
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return parse(f, path)
}
