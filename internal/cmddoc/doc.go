// Package cmddoc reads realip's manual pages and drives its bash
// completions, for the tests that keep both in step with the code they
// describe: the command tables and flag sets of realip-agent and
// realip-edge, the agent's configuration fields, the kernel module's
// parameters, counters and netlink interface.
//
// The pages are man(7) sources in packaging/man; the completions are bash
// scripts in packaging/completion, one per command, named after it. Both
// are installed by the packages (packaging/nfpm). Nothing at run time
// depends on this package.
//
// # Manual pages
//
// [Read] parses a page into headings (.SH, .SS), tagged paragraphs (.TP:
// the line after it is the tag) and output lines, with the font and
// character escapes the pages use turned into plain text. It is a reader
// for the plain forms the pages are written in, not a troff
// implementation. [Lint] formats a page with groff and with man-db's
// `man --warnings`, the way lintian does, and returns every warning.
//
// # Completions
//
// [Complete] loads bash-completion (/usr/share/bash-completion) in a
// non-interactive bash, lets its loader find the command's completion in
// a folder the way it finds an installed one, sets COMP_WORDS and
// COMP_CWORD, calls the completion function and returns COMPREPLY.
package cmddoc
