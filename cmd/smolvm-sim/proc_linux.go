package main

import "syscall"

// guestAttr puts the guest in its own process group and kills it if the
// simulator dies without cleaning up (e.g. SIGKILL), the way the real agent
// kills the guest when the client's connection drops.
func guestAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
