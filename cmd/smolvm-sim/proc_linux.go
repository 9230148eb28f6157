package main

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// guestAttr puts the guest in its own process group and kills it if the
// simulator dies without cleaning up (e.g. SIGKILL), the way the real agent
// kills the guest when the client's connection drops.
func guestAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
