// Package wire holds the codecs realip speaks on the wire, shared by the
// receiving side (package listener) and the sending side (the edge):
//
//   - SPP, the 38-byte Simple Proxy Protocol header that precedes every UDP
//     datagram between an edge and an origin ([ParseSPP], [AppendSPP]);
//   - the PROXY protocol v1 and v2 headers, parsed with
//     github.com/pires/go-proxyproto and presented as [ProxyHeader] with
//     netip addresses, plus what that library leaves out: detecting a header
//     from a prefix without guessing ([Detect]), framing a header exactly in a
//     stream ([ReadProxyHeader]) and verifying the CRC32C TLV ([VerifyCRC32C]).
//
// Every parser returns an error that matches one of the package's sentinel
// errors with errors.Is, so callers can count rejections by reason. Nothing in
// this package keeps state or does I/O beyond the reader it is handed.
package wire
