package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Machine states stored in records.
const (
	stateCreated = "created"
	stateRunning = "running"
	stateStopped = "stopped"
)

// machine is the persisted record of one simulated VM.
type machine struct {
	Name         string            `json:"name"`
	State        string            `json:"state"`
	CPUs         int               `json:"cpus"`
	MemoryMiB    int               `json:"memory_mib"`
	PID          int               `json:"pid"` // the start invocation's pid: the simulator has no VMM process
	CreatedAt    int64             `json:"created_at"`
	Image        string            `json:"image"`
	Network      bool              `json:"network"`
	AllowedCIDRs []string          `json:"allowed_cidrs"`
	DNS          string            `json:"dns,omitempty"`
	Env          []string          `json:"env"` // the pack's, then create's -e
	From         string            `json:"from"`
	Labels       map[string]string `json:"labels"`
	StartedOnce  bool              `json:"started_once"`
	StartedAt    time.Time         `json:"started_at"`
}

// store is the state directory shared by every simulator process.
type store struct{ dir string }

func openStore(dir string) (*store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "machines"), filepath.Join(dir, "roots")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return &store{dir: dir}, nil
}

// locked runs fn under an exclusive flock on STATE/lock.
func (s *store) locked(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // closing the descriptor releases the lock
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return err
	}
	return fn()
}

func (s *store) recordPath(name string) string {
	return filepath.Join(s.dir, "machines", name+".json")
}

// root is the directory standing in for the machine's filesystem.
func (s *store) root(name string) string { return filepath.Join(s.dir, "roots", name) }

// guestPath maps guest path p into root. Relative paths start at "/"; a ".."
// that would climb above the guest root is rejected.
func guestPath(root, p string) (string, error) {
	depth := 0
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return "", fmt.Errorf("guest path escapes the machine root: %s", p)
			}
		default:
			depth++
		}
	}
	return filepath.Join(root, filepath.FromSlash(filepath.Clean("/"+p))), nil
}

// get returns the record or nil when there is none. Call under the lock.
func (s *store) get(name string) (*machine, error) {
	if validateName(name) != nil {
		return nil, nil // such a record can never have been created
	}
	data, err := os.ReadFile(s.recordPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m := &machine{}
	return m, json.Unmarshal(data, m)
}

// put writes the record atomically. Call under the lock.
func (s *store) put(m *machine) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.recordPath(m.Name), 0o644, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// remove deletes the record and the guest root. Call under the lock.
func (s *store) remove(name string) error {
	if err := os.Remove(s.recordPath(name)); err != nil {
		return err
	}
	return os.RemoveAll(s.root(name))
}

// list returns all records sorted by name. Call under the lock.
func (s *store) list() ([]*machine, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "machines"))
	if err != nil {
		return nil, err
	}
	var out []*machine
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		m, err := s.get(name)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// bump increments the call counters for keys and returns all counters. Call under the lock.
func (s *store) bump(keys []string) (map[string]int, error) {
	path := filepath.Join(s.dir, "counters.json")
	counts := map[string]int{}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &counts); err != nil {
			return nil, err
		}
	}
	for _, k := range keys {
		counts[k]++
	}
	if data, err = json.Marshal(counts); err != nil {
		return nil, err
	}
	return counts, writeFileAtomic(path, 0o644, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeFileAtomic writes path through a temporary file in the same directory and a rename.
func writeFileAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
