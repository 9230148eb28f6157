package main

import (
	"os/exec"
	"syscall"
	"time"
)

// serverProc is a server process the harness started and stops: Redis,
// versitygw.
type serverProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// watch waits for cmd, which has started, in the background.
func (p *serverProc) watch(cmd *exec.Cmd) {
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.exited) }()
}

// stop sends SIGTERM to the server's pid and SIGKILL if it lingers.
func (p *serverProc) stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
