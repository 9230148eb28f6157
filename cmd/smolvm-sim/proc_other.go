//go:build !linux

package main

import "syscall"

// guestAttr puts the guest in its own process group.
func guestAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
