package cmddoc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// Folders of the pages and completions in the repository.
const (
	ManDir        = "packaging/man"
	CompletionDir = "packaging/completion"
)

// Root returns the repository's root: the first folder from the working
// directory up whose go.mod is the module github.com/realip/realip (tests
// run in their package's folder).
func Root() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("cmddoc: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/realip/realip\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("cmddoc: no go.mod of github.com/realip/realip above %s", wd)
		}
	}
}

// ReadMan reads the manual page file (e.g. "realip-agent.8") from ManDir.
func ReadMan(file string) (*Page, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	return Read(filepath.Join(root, ManDir, file))
}

// CompletionFor returns the path of command's completion script in
// CompletionDir.
func CompletionFor(command string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, CompletionDir, command), nil
}
