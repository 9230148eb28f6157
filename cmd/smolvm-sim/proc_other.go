//go:build !linux

package main

import (
	"io"
	"os"
	"syscall"
)

// guestAttr puts the guest in its own process group.
func guestAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// isTerminal reports whether r is a character device (approximate off Linux).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
