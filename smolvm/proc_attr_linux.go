package smolvm

import "syscall"

// procAttr gives smolvm its own process group, so a signal reaches what it
// started, and asks the kernel to SIGTERM it if the worker dies (Pdeathsig
// fires when the thread that started it exits; the Go runtime does not end
// threads while the program runs, so in practice that is process death).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
