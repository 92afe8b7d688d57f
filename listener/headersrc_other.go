//go:build !unix

package listener

// nonBlockingReads: without it every header is waited for in a goroutine
// of its own (awaitHeader).
const nonBlockingReads = false

func (s *headerSource) readOnce(uintptr) bool { return true }

func (s *headerSource) readNoWait([]byte) (int, error) { return 0, errWouldBlock }
