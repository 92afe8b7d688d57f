package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestVersionFromDescribe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3-0-gabc1234", "1.2.3"},
		{"1.2.3-0-gabc1234", "1.2.3"},
		{"v1.2.3-4-gabc1234", "1.2.3+git4.abc1234"},
		{"v1.2.3-rc.1-0-gabc1234", "1.2.3~rc.1"},
		{"v1.2.3-rc.1-12-gabc1234", "1.2.3~rc.1+git12.abc1234"},
		{"v2.0-beta-2-0-gdeadbee", "2.0~beta.2"},
		{"v10-0-gdeadbee", "10"},
	} {
		got, err := versionFromDescribe(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("versionFromDescribe(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "release-1", "v1.2.3", "vX-0-gabc", "v1.2.3-4-gXYZ", "v1.2.3_x-0-gabc1234"} {
		if got, err := versionFromDescribe(bad); err == nil {
			t.Errorf("versionFromDescribe(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDevVersion(t *testing.T) {
	at := time.Date(2026, 11, 25, 14, 30, 5, 0, time.FixedZone("X", 3600))
	if got, want := devVersion(at, "a1285ee"), "0.0.0~git20261125133005.a1285ee"; got != want {
		t.Errorf("devVersion = %q, want %q", got, want)
	}
	if err := checkVersion(devVersion(at, "a1285ee")); err != nil {
		t.Error(err)
	}
}

// ordered lists versions oldest first, as an upgrade path; every tool that
// compares versions must agree with it.
var ordered = []string{
	"0.0.0~git20261124235959.fffffff",
	"0.0.0~git20261125133005.a1285ee",
	"0.0.0~git20261125133005.a1285ee+upgrade.1",
	"0.0.0",
	"1.2.3~rc.1",
	"1.2.3~rc.1+git12.abc1234",
	"1.2.3~rc.2",
	"1.2.3",
	"1.2.3+git4.abc1234",
	"1.2.3+git10.0123456",
	"1.2.4",
	"1.10.0",
}

// TestVersionOrderDpkg checks the upgrade path with dpkg, as apt orders
// versions (skipped where dpkg is missing).
func TestVersionOrderDpkg(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	for i := 1; i < len(ordered); i++ {
		a, b := ordered[i-1]+"-1", ordered[i]+"-1"
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s is not older than %s: %v", a, b, err)
		}
	}
}

// TestVersionOrderRPM checks the same with rpm's own comparison (skipped
// where rpm is missing; test/packaging installs it).
func TestVersionOrderRPM(t *testing.T) {
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Skip("rpm not installed")
	}
	var lua strings.Builder
	for i := 1; i < len(ordered); i++ {
		lua.WriteString(`print(rpm.vercmp("` + ordered[i-1] + `", "` + ordered[i] + `") .. " ") `)
	}
	out, err := exec.Command("rpm", "--eval", "%{lua: "+lua.String()+"}").CombinedOutput()
	if err != nil {
		t.Fatalf("rpm --eval: %v: %s", err, out)
	}
	got := strings.Fields(string(out))
	if len(got) != len(ordered)-1 {
		t.Fatalf("rpm --eval printed %q", out)
	}
	for i, r := range got {
		if r != "-1" {
			t.Errorf("rpm: vercmp(%s, %s) = %s, want -1", ordered[i], ordered[i+1], r)
		}
	}
}
