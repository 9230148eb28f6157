package main

import (
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"time"
)

// onFreePort calls start with a free loopback port until it starts a
// server, five times at most: a port found free may be taken before the
// server binds it. The error names what did not start and why.
func onFreePort(what string, start func(port int) error) error {
	var last error
	for try := 0; try < 5; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if last = start(port); last == nil {
			return nil
		}
	}
	return fmt.Errorf("%s did not start: %w", what, last)
}

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
