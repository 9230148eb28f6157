package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

func get(t *testing.T, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeReloadShutdown: the API serves, a reload swaps the tokens (a
// bad file keeps the old ones), and shutdown ends an open event stream
// cleanly and returns 0; no token is ever logged.
func TestServeReloadShutdown(t *testing.T) {
	redis := testredis.Mini(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokens, map[string]string{"tok-old-1": "acme *"})
	addr, log, reload, stop := startAPI(t, "-redis", redis.URL(), "-tokens", tokens)
	base := "http://" + addr

	if code, body := get(t, http.DefaultClient, base+"/healthz", ""); code != 200 {
		t.Fatalf("healthz: %d %s", code, body)
	}
	code, body := post(t, base+"/v1/runs", "tok-old-1", `{"image":"alpine:3","command":["true"],"queue":"idle"}`)
	if code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	id := body[strings.Index(body, `"id":"`)+6:]
	id = id[:strings.IndexByte(id, '"')]

	writeTokens(t, tokens, map[string]string{"tok-new-2": "acme *"})
	reload <- struct{}{}
	waitLog(t, log, `"message":"tokens reloaded"`)
	if code, _ := get(t, http.DefaultClient, base+"/v1/runs/"+id, "tok-old-1"); code != 401 {
		t.Errorf("the old token after the reload: %d", code)
	}
	if code, body := get(t, http.DefaultClient, base+"/v1/runs/"+id, "tok-new-2"); code != 200 {
		t.Errorf("the new token after the reload: %d %s", code, body)
	}
	writeTokens(t, tokens, nil)
	if err := writeFile(tokens, "not a tokens file\n"); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	waitLog(t, log, `"message":"tokens not reloaded; the tokens loaded before stay in force"`)
	if code, _ := get(t, http.DefaultClient, base+"/v1/runs/"+id, "tok-new-2"); code != 200 {
		t.Errorf("the token after a bad reload: %d", code)
	}

	// An open event stream (the run stays pending: no worker serves
	// "idle") ends cleanly when the API shuts down.
	req, _ := http.NewRequest("GET", base+"/v1/runs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer tok-new-2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", resp, err)
	}
	first, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if !strings.HasPrefix(first, ": run "+id) {
		t.Errorf("first line %q", first)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); ended <- err }()
	if code := stop(); code != 0 {
		t.Errorf("exit %d after cancel", code)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("the stream ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the stream did not end with the API")
	}
	for _, secret := range []string{"tok-old-1", "tok-new-2"} {
		if strings.Contains(log.String(), secret) {
			t.Errorf("the log holds token %s", secret)
		}
	}
}

// TestTLS: with -tls-cert and -tls-key the API speaks HTTPS only.
func TestTLS(t *testing.T) {
	t.Parallel()
	redis := testredis.Mini(t)
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	tokens := filepath.Join(dir, "tokens")
	writeTokens(t, tokens, map[string]string{"tok": "acme *"})
	addr, log, _, _ := startAPI(t, "-redis", redis.URL(), "-tokens", tokens, "-tls-cert", cert, "-tls-key", key)
	if !strings.Contains(log.String(), `"tls":true`) {
		t.Errorf("the start line does not say TLS:\n%s", log)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, body := get(t, c, "https://"+addr+"/healthz", ""); code != 200 {
		t.Errorf("https healthz: %d %s", code, body)
	}
	if code, _ := get(t, c, "https://"+addr+"/v1/runs/x", "tok"); code != 404 {
		t.Errorf("https GET of a missing run: %d", code)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		// net/http answers plain HTTP on a TLS port with a 400; either way
		// no plain-text API is served.
		code, body := get(t, http.DefaultClient, "http://"+addr+"/healthz", "")
		if code == 200 {
			t.Errorf("plain HTTP on the TLS port: %d %s", code, body)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	writeTokens(t, tokens, map[string]string{"tok": "acme *"})
	bad := filepath.Join(dir, "bad-tokens")
	writeFile(bad, "0123 acme *\n")
	cert, _, _ := selfSigned(t, dir)
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in the one-line message
	}{
		{"no tokens", nil, nil, "-tokens: a tokens file is required"},
		{"missing tokens file", []string{"-tokens", filepath.Join(dir, "nope")}, nil, "-tokens: tokens file: open"},
		{"bad tokens file", []string{"-tokens", bad}, nil, "-tokens: tokens file line 1: the first field must be the token's SHA-256"},
		{"bad tokens by env", nil, map[string]string{"BOTTLEQ_API_TOKENS": bad}, "BOTTLEQ_API_TOKENS: tokens file line 1"},
		{"listen not host:port", []string{"-tokens", tokens, "-listen", "8090"}, nil, "-listen"},
		{"listen by env", []string{"-tokens", tokens}, map[string]string{"BOTTLEQ_API_LISTEN": "nowhere"}, "BOTTLEQ_API_LISTEN"},
		{"redis scheme", []string{"-tokens", tokens, "-redis", "http://:pw@h:1"}, nil, "-redis"},
		{"redis wait negative", []string{"-tokens", tokens, "-redis-wait", "-1s"}, nil, "-redis-wait"},
		{"redis wait by env", []string{"-tokens", tokens}, map[string]string{"BOTTLEQ_REDIS_WAIT": "-1s"}, "BOTTLEQ_REDIS_WAIT"},
		{"cert without key", []string{"-tokens", tokens, "-tls-cert", cert}, nil, "-tls-cert and -tls-key go together"},
		{"key is no key", []string{"-tokens", tokens, "-tls-cert", cert, "-tls-key", cert}, nil, "-tls-cert"},
		{"max open 0", []string{"-tokens", tokens, "-max-open-runs", "0"}, nil, "-max-open-runs"},
		{"rate 0", []string{"-tokens", tokens, "-rate", "0"}, nil, "-rate"},
		{"files over the limit", []string{"-tokens", tokens, "-max-files-bytes", "1GiB"}, nil, "-max-files-bytes"},
		{"files not a size", nil, map[string]string{"BOTTLEQ_API_TOKENS": tokens, "BOTTLEQ_MAX_FILES_BYTES": "lots"}, "BOTTLEQ_MAX_FILES_BYTES"},
		{"events poll", []string{"-tokens", tokens, "-events-poll", "1ms"}, nil, "-events-poll"},
		{"relative data dir", []string{"-tokens", tokens, "-data-dir", "data"}, nil, "-data-dir"},
		{"store scheme", []string{"-tokens", tokens, "-store", "http://h/b"}, nil, `-store: store: scheme: "http" is not file or s3`},
		{"store credentials by env", []string{"-tokens", tokens}, map[string]string{"BOTTLEQ_STORE": "s3://AKIA:pw@bucket/p"}, "BOTTLEQ_STORE: store: url: credentials do not belong in the store URL"},
		{"log level", []string{"-tokens", tokens, "-log-level", "loud"}, nil, "-log-level"},
		{"argument", []string{"-tokens", tokens, "extra"}, nil, `"extra"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			getenv := func(k string) string {
				if v, ok := tt.env[k]; ok || k != "BOTTLEQ_API_LISTEN" {
					return v
				}
				return "127.0.0.1:0" // never the default port, should a bad value be taken
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if code := Run(ctx, tt.args, getenv, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2; stderr %q", code, stderr.String())
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "api: ") || !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q, want one line \"api: ...\" with %q", out, tt.want)
			}
			if strings.Contains(out, "pw@") {
				t.Errorf("stderr echoes a Redis password: %q", out)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	var stderr syncBuffer
	if code := Run(context.Background(), []string{"-h"}, noEnv, &stderr); code != 0 {
		t.Errorf("-h: exit code %d, want 0", code)
	}
	for _, e := range envFallbacks {
		if !strings.Contains(stderr.String(), "-"+e.Flag()+" ["+e.Var()+"]") {
			t.Errorf("usage lacks -%s [%s]:\n%s", e.Flag(), e.Var(), stderr.String())
		}
	}
	var out syncBuffer
	if code := Run(context.Background(), []string{"-version"}, noEnv, &out); code != 0 || !strings.HasPrefix(out.String(), "api ") {
		t.Errorf("-version: exit %d, %q", code, out.String())
	}
}

func TestListenError(t *testing.T) {
	redis := testredis.Mini(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokens, map[string]string{"tok": "acme *"})
	addr, _, _, _ := startAPI(t, "-redis", redis.URL(), "-tokens", tokens)
	var stderr syncBuffer
	if code := Run(context.Background(), []string{"-listen", addr, "-tokens", tokens, "-redis", redis.URL()}, noEnv, &stderr); code != 1 {
		t.Errorf("a second API on %s: exit code %d, want 1; stderr:\n%s", addr, code, stderr.String())
	}
}

func waitLog(t *testing.T, log *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %s:\n%s", want, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStoreChoice: the API serves artifacts from -store, failing at start
// when it does not work; without it, from the worker's default store in
// -data-dir, which it does not create.
func TestStoreChoice(t *testing.T) {
	redis := testredis.Mini(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokens, map[string]string{"tok": "acme *"})
	withStore, without, explicit := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(withStore, "store"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"the data directory's store", []string{"-data-dir", withStore}, "file://" + filepath.Join(withStore, "store")},
		{"none in the data directory yet", []string{"-data-dir", without}, "file://" + filepath.Join(without, "store")},
		{"-store", []string{"-data-dir", withStore, "-store", "file://" + explicit}, "file://" + explicit},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, log, _, _ := startAPI(t, append([]string{"-redis", redis.URL(), "-tokens", tokens}, tt.args...)...)
			waitLog(t, log, `"store":"`+tt.want+`"`)
		})
	}
	if _, err := os.Stat(filepath.Join(without, "store")); err == nil {
		t.Error("the API made a store in the data directory")
	}

	afile := filepath.Join(t.TempDir(), "afile")
	if err := writeFile(afile, "x"); err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	code := Run(context.Background(), []string{"-listen", "127.0.0.1:0", "-log-format", "json", "-tokens", tokens, "-redis", redis.URL(), "-store", "file://" + afile + "/store"}, noEnv, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `"error":"-store: store: dir: cannot create `+afile+`/store: not a directory"`) {
		t.Errorf("a store that cannot work: exit %d, log:\n%s", code, stderr.String())
	}
}
