//go:build linux

package agenttest

import (
	"io"
	"net/http"
	"testing"
)

// Scrape GETs url (a /metrics address) and returns the body; the test
// fails unless the answer is 200 OK.
func Scrape(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
