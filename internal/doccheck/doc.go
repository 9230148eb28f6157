// Package doccheck holds a test that every exported identifier go doc shows
// in bottleq's library packages has a doc comment: types, functions,
// methods of exported types, constants and variables (a group's comment
// counts), struct fields and interface methods (a comment on an earlier
// field that names the field counts, as in "Stdout and Stderr are ...").
//
// It has no code of its own and must not be imported.
package doccheck
