package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/bot-bottle/bottleq/internal/validate"
	"github.com/bot-bottle/bottleq/tasks"
)

// anyQueue in a tokens file's queue list lets the token use every queue.
const anyQueue = "*"

// Grant is what a token may do: whose runs it starts and sees, and on
// which queues.
type Grant struct {
	// Tenant is the tenant every run of the token belongs to.
	Tenant string
	// Queues lists the queues the token may use, sorted; nil means any
	// queue ("*" in the file).
	Queues []string
}

// Allows reports whether the grant may use queue.
func (g Grant) Allows(queue string) bool {
	return g.Queues == nil || slices.Contains(g.Queues, queue)
}

// Tokens holds the tokens of a tokens file, by the SHA-256 of each token.
// It is safe for concurrent use; [Tokens.Load] replaces them all at once.
type Tokens struct {
	mu     sync.RWMutex
	grants map[[sha256.Size]byte]Grant
}

// newTokens returns an empty set: every token is unknown until Load.
func newTokens() *Tokens { return &Tokens{grants: map[[sha256.Size]byte]Grant{}} }

// LoadTokensFile reads the tokens file at path.
func LoadTokensFile(path string) (*Tokens, error) {
	t := newTokens()
	if err := t.LoadFile(path); err != nil {
		return nil, err
	}
	return t, nil
}

// LoadFile replaces the tokens with those of the file at path. On any
// error the tokens held before stay in force.
func (t *Tokens) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	return t.Load(bytes.NewReader(b))
}

// Load replaces the tokens with those read from r, in the tokens file
// format: one token per line, "SHA256HEX TENANT QUEUE[,QUEUE...]", where
// SHA256HEX is the hex SHA-256 of the token, the queue list may be "*"
// (any queue), and '#' starts a comment. An error names the line and
// never quotes a digest; on any error the tokens held before stay in
// force.
func (t *Tokens) Load(r io.Reader) error {
	grants, err := parseTokens(r)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.grants = grants
	t.mu.Unlock()
	return nil
}

// Len returns how many tokens there are.
func (t *Tokens) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.grants)
}

// Lookup returns the grant of a token, if it is one.
func (t *Tokens) Lookup(token string) (Grant, bool) {
	if token == "" {
		return Grant{}, false
	}
	sum := sha256.Sum256([]byte(token))
	t.mu.RLock()
	defer t.mu.RUnlock()
	g, ok := t.grants[sum]
	return g, ok
}

func parseTokens(r io.Reader) (map[[sha256.Size]byte]Grant, error) {
	grants := map[[sha256.Size]byte]Grant{}
	lines := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("tokens file line %d: %s", n, fmt.Sprintf(format, a...))
		}
		if len(f) != 3 {
			return nil, bad("has %d fields, want 3: SHA256HEX TENANT QUEUE[,QUEUE...]", len(f))
		}
		raw, err := hex.DecodeString(f[0])
		if err != nil || len(raw) != sha256.Size {
			return nil, bad("the first field must be the token's SHA-256 as 64 hex digits")
		}
		sum := [sha256.Size]byte(raw)
		if first, dup := lines[sum]; dup {
			return nil, bad("the same token as line %d", first)
		}
		if err := tasks.ValidateTenant(f[1]); err != nil {
			return nil, bad("%v", err)
		}
		g := Grant{Tenant: f[1]}
		if f[2] != anyQueue {
			for _, q := range strings.Split(f[2], ",") {
				if err := validate.Queue(q); err != nil {
					return nil, bad("queue %v", err)
				}
				if !slices.Contains(g.Queues, q) {
					g.Queues = append(g.Queues, q)
				}
			}
			slices.Sort(g.Queues)
		}
		grants[sum], lines[sum] = g, n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	return grants, nil
}

// TokenHash returns the hex SHA-256 of a token, as a tokens file lists it.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
