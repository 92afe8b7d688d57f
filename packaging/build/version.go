package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// A package version is the same string for deb and rpm: an upstream version
// without '-' (rpm forbids it in Version, and deb would read it as the
// revision), followed by the release "-1" / Release: 1. Both formats order
// such versions the same way: '~' sorts before anything (even the end of
// the string), '+' after the end of the string, digits numerically.
//
//	git describe                    package version
//	v1.2.3                          1.2.3
//	v1.2.3-rc.1                     1.2.3~rc.1        (before 1.2.3)
//	v1.2.3-4-gabc1234               1.2.3+git4.abc1234 (after 1.2.3, before 1.2.4)
//	v1.2.3-rc.1-4-gabc1234          1.2.3~rc.1+git4.abc1234
//	(no tag)                        0.0.0~git20261125143000.abc1234
//
// A commit without a tag gets 0.0.0~git<commit time, UTC>.<short hash>: it
// sorts before any release (0.0.0 included) and after every older commit,
// since the commit time comes first.
var validVersion = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`)

// describeRE matches `git describe --tags --long` output for a v-prefixed
// (or bare) tag: TAG-COUNT-gHASH.
var describeRE = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.]+(?:-[0-9A-Za-z.]+)*?))?-([0-9]+)-g([0-9a-f]+)$`)

// versionFromDescribe turns `git describe --tags --long` output into a
// package version.
func versionFromDescribe(desc string) (string, error) {
	m := describeRE.FindStringSubmatch(strings.TrimSpace(desc))
	if m == nil {
		return "", fmt.Errorf("git describe gave %q, not vMAJOR.MINOR.PATCH[-PRERELEASE]-N-gHASH: tag releases as v1.2.3 or v1.2.3-rc.1", desc)
	}
	v := m[1]
	if m[2] != "" {
		v += "~" + strings.ReplaceAll(m[2], "-", ".")
	}
	if m[3] != "0" {
		v += "+git" + m[3] + "." + m[4]
	}
	return v, checkVersion(v)
}

// devVersion is the version of an untagged commit.
func devVersion(commitTime time.Time, hash string) string {
	return "0.0.0~git" + commitTime.UTC().Format("20060102150405") + "." + hash
}

func checkVersion(v string) error {
	if !validVersion.MatchString(v) {
		return fmt.Errorf("version %q: must start with a digit and hold only letters, digits and . + ~ (deb and rpm both accept these, and order them alike)", v)
	}
	return nil
}

// gitInfo is what the packages record about the commit they come from.
type gitInfo struct {
	Version string    // package version (see above)
	Commit  string    // full hash, "" outside git
	Time    time.Time // commit time: the packages' file times and changelog date
	Dirty   bool      // the work tree had changes
}

// describe derives the version from the git repository at dir.
func describe(dir string) (gitInfo, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
			}
			return "", fmt.Errorf("git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var gi gitInfo
	out, err := git("log", "-1", "--format=%H %ct")
	if err != nil {
		return gi, fmt.Errorf("cannot tell the version (give -version): %w", err)
	}
	var secs int64
	if _, err := fmt.Sscanf(out, "%s %d", &gi.Commit, &secs); err != nil {
		return gi, fmt.Errorf("git log gave %q", out)
	}
	gi.Time = time.Unix(secs, 0).UTC()
	if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		gi.Dirty = true
	}
	desc, err := git("describe", "--tags", "--long", "--match", "v[0-9]*")
	if err != nil {
		// No tag reachable: a development version.
		gi.Version = devVersion(gi.Time, gi.Commit[:7])
		return gi, nil
	}
	gi.Version, err = versionFromDescribe(desc)
	return gi, err
}
