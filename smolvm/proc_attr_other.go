//go:build unix && !linux

package smolvm

import "syscall"

// procAttr gives smolvm its own process group, so a signal reaches what it
// started.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
