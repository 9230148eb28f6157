package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/api"
)

// syncBuffer is a bytes.Buffer safe for the API goroutine to write while
// the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// noEnv is a getenv with nothing set.
func noEnv(string) string { return "" }

// writeTokens writes a tokens file granting each token "tenant queues".
func writeTokens(t *testing.T, path string, grants map[string]string) {
	t.Helper()
	var b strings.Builder
	for tok, g := range grants {
		fmt.Fprintf(&b, "%s %s\n", api.TokenHash(tok), g)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// listening waits for the "api listening" line in log and returns its
// address; it fails the test if done reports an exit first.
func listening(t *testing.T, log interface{ String() string }, done chan int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(log.String(), "\n") {
			var l struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "api listening" {
				return l.Addr
			}
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("the API exited %d before listening:\n%s", code, log)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no \"api listening\" line within 30s:\n%s", log)
	return ""
}

// startAPI runs run in process with args (plus JSON logs and a free
// port) and returns its address, its log and its reload channel. At
// cleanup it cancels run and fails the test unless it returns 0 promptly.
func startAPI(t *testing.T, args ...string) (addr string, log *syncBuffer, reload chan struct{}, stop func() int) {
	t.Helper()
	log = &syncBuffer{}
	reload = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	argv := append([]string{"-listen", "127.0.0.1:0", "-log-format", "json", "-data-dir", t.TempDir()}, args...)
	go func() { done <- run(ctx, argv, noEnv, log, reload) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Errorf("the API did not return within 20s of cancel; log:\n%s", log)
			}
		})
		return code
	}
	t.Cleanup(func() {
		if c := stop(); c != 0 {
			t.Errorf("the API returned %d, want 0; log:\n%s", c, log)
		}
	})
	return listening(t, log, done), log, reload, stop
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bottleq api test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

// writeFile writes content to path, private.
func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
