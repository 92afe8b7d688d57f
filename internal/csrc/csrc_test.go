package csrc

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const sample = `/* a header */
#define NAME "realip_toa" /* the family */
#define LEN 18
enum cmd {
	CMD_UNSPEC, // zero
	CMD_A,
	CMD_B = 7,
	CMD_C,
	__CMD_MAX,
};
static const char *const names[N] = {
	[CMD_A] = "a",
	[CMD_B] = "b \"quoted\"",
};
`

func sampleFile(t *testing.T) *File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.h")
	if err := os.WriteFile(p, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestEnum(t *testing.T) {
	got, err := sampleFile(t).Enum("cmd")
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{{"CMD_UNSPEC", 0}, {"CMD_A", 1}, {"CMD_B", 7}, {"CMD_C", 8}, {"__CMD_MAX", 9}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDefine(t *testing.T) {
	f := sampleFile(t)
	for name, want := range map[string]string{"NAME": "realip_toa", "LEN": "18"} {
		if got, err := f.Define(name); err != nil || got != want {
			t.Errorf("Define(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestDesignated(t *testing.T) {
	got, err := sampleFile(t).Designated("names")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CMD_A": "a", "CMD_B": `b "quoted"`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestErrors(t *testing.T) {
	f := sampleFile(t)
	if _, err := f.Enum("missing"); err == nil {
		t.Error("Enum(missing): no error")
	}
	if _, err := f.Define("MISSING"); err == nil {
		t.Error("Define(MISSING): no error")
	}
	if _, err := f.Designated("missing"); err == nil {
		t.Error("Designated(missing): no error")
	}
	if _, err := Read(filepath.Join(t.TempDir(), "none.h")); err == nil {
		t.Error("Read of a missing file: no error")
	}
}
