//go:build !linux

package listener

import "errors"

// openPinnedTOA: the eBPF TOA receiver (package toarecv) is Linux only.
func openPinnedTOA(string) (toaLookup, error) {
	return nil, errors.New("the eBPF TOA receiver runs on Linux only")
}
