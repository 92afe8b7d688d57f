// Package csrc reads the few facts Go code mirrors from the kernel module's
// C sources (kmod/): the members of an enum in order, a #define's value,
// the strings of a designated array initializer. Tests use it to fail when
// a Go mirror (toactl, the exporter's help texts, the agent's defaults)
// drifts from the module; nothing at run time depends on it.
//
// It is a reader for the plain forms the module's headers use, not a C
// parser: one member or definition per line, no macros inside them.
package csrc
