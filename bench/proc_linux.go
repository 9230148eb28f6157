package main

import "syscall"

// procAttr puts a child in its own process group and kills it if the
// harness dies, so no worker, simulator or redis-server outlives a run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
