// Package repocheck holds a test that keeps build outputs out of the
// repository: it fails, naming each file, when `git ls-files` lists a
// binary (an ELF or Mach-O file, or a file with the executable bit that is
// not a `#!` script) or a file over 1 MiB. Scripts such as scripts/demo and
// .ci/run stay executable. Outside a git checkout, or without git, the test
// skips and says why, except under CI, where it fails.
//
// It has no code of its own and must not be imported.
package repocheck
