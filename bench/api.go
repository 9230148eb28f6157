package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
)

// apiToken is the bench's bearer token for cmd/api.
const apiToken = "bench-token"

// apiOverhead measures what cmd/api adds to starting a run: POST /v1/runs
// until the task is in Redis, against enqueue.Client.Enqueue, the Go
// library the API calls, in the same run on the same Redis.
func apiOverhead(ctx context.Context, b *bench) (section, error) {
	s := section{method: `cmd/api runs against the harness's redis-server (no rate cap, an open-runs cap too high to reach but checked, a JSON log line per request, as in production), no worker:
tasks stay pending in a queue of their own. **Latency:** N sequential calls each way, alternating in blocks of 50 —
` + "`enqueue.Client.Enqueue`" + ` in the harness's process, and ` + "`POST /v1/runs`" + ` over a kept-alive loopback HTTP connection
from the harness until its 201 (by then the task is in Redis); same payload. The API's figure includes the HTTP round trip,
JSON decoding and validation, token lookup, its open-runs record (a Lua script) and the enqueue itself.
**Throughput:** 16 concurrent callers for 5 s each way; the API, Redis and the harness share the machine's cores.`}
	apiBin, err := b.build(ctx, "github.com/bot-bottle/bottleq/cmd/api", "api")
	if err != nil {
		return s, err
	}
	tokens := filepath.Join(b.mkdir("api"), "tokens")
	sum := sha256.Sum256([]byte(apiToken))
	if err := os.WriteFile(tokens, []byte(hex.EncodeToString(sum[:])+" bench *\n"), 0o600); err != nil {
		return s, err
	}
	logPath := filepath.Join(b.dir, "api.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return s, err
	}
	defer logf.Close()
	cmd := exec.Command(apiBin, "-redis", "redis://"+b.redis.addr, "-tokens", tokens, "-listen", "127.0.0.1:0",
		"-rate", "-1", "-max-open-runs", "1000000000", "-log-format", "json")
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	}()
	addr, err := waitListening(ctx, logPath, done)
	if err != nil {
		return s, err
	}
	base := "http://" + addr
	queue := b.uniq("api")
	c := enqueue.New(b.opt)
	defer c.Close()
	p := payload(image)
	body, _ := json.Marshal(struct {
		Image   string   `json:"image"`
		Command []string `json:"command"`
		Queue   string   `json:"queue"`
	}{p.Image, p.Command, queue})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func() error {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/runs", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("POST /v1/runs: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	direct := func() error {
		_, err := c.Enqueue(ctx, p, enqueue.Options{Queue: queue})
		return err
	}
	// Warm both paths up: connections, Lua scripts loaded.
	for range 20 {
		if err := post(); err != nil {
			return s, err
		}
		if err := direct(); err != nil {
			return s, err
		}
	}
	n := b.n(2000, 200)
	var lat [2][]float64
	for i := 0; i < n; i += 50 {
		for k, f := range []func() error{direct, post} {
			for j := 0; j < 50 && i+j < n; j++ {
				t0 := time.Now()
				if err := f(); err != nil {
					return s, err
				}
				lat[k] = append(lat[k], msDur(time.Since(t0)))
			}
		}
	}
	d50, d99 := percentile(lat[0], 50), percentile(lat[0], 99)
	a50, a99 := percentile(lat[1], 50), percentile(lat[1], 99)
	s.add(fmt.Sprintf("Enqueue, direct: p50 / p99 (N=%d)", n), ms(d50)+" / "+ms(d99))
	s.add(fmt.Sprintf("POST /v1/runs: p50 / p99 (N=%d)", n), ms(a50)+" / "+ms(a99))
	s.goal("API overhead p50 (POST − Enqueue)", ms(a50-d50), "≤ 2 ms", a50-d50 <= 2)

	rate := func(f func() error) (float64, error) {
		const callers, window = 16, 5 * time.Second
		var count atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		stop := time.Now().Add(window)
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					if err := f(); err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					count.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(count.Load()) / window.Seconds(), firstErr
	}
	dr, err := rate(direct)
	if err != nil {
		return s, err
	}
	ar, err := rate(post)
	if err != nil {
		return s, err
	}
	s.add("Enqueue, direct: tasks/s (16 callers)", fmt.Sprintf("%.0f", dr))
	s.add(fmt.Sprintf("POST /v1/runs: requests/s (16 callers, %d cores)", runtime.NumCPU()), fmt.Sprintf("%.0f", ar))
	insp := asynq.NewInspector(b.opt)
	defer insp.Close()
	if info, err := insp.GetQueueInfo(queue); err == nil {
		s.detail("%d tasks pending in queue %s at the end, every one a 201 or an Enqueue that returned; the queue is deleted.", info.Pending, queue)
	}
	insp.DeleteQueue(queue, true)
	return s, nil
}

// waitListening reads the API's JSON log until its "api listening" line.
func waitListening(ctx context.Context, logPath string, done chan error) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		for _, line := range bytes.Split(b, []byte("\n")) {
			var l struct{ Message, Addr string }
			if json.Unmarshal(line, &l) == nil && l.Message == "api listening" {
				return l.Addr, nil
			}
		}
		select {
		case err := <-done:
			return "", fmt.Errorf("cmd/api exited before listening: %v\n%s", err, tail(logPath))
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("cmd/api did not listen within 30s:\n%s", tail(logPath))
}
