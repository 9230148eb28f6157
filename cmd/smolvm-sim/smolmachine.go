package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// manifestFormat marks a simulator .smolmachine; anything else is rejected.
const manifestFormat = "smolvm-sim/1"

// manifest mirrors the part of smolvm's PackManifest that a machine
// created --from the pack inherits.
type manifest struct {
	Format  string   `json:"format"`
	Image   string   `json:"image"`
	Env     []string `json:"env"`
	CPUs    int      `json:"cpus"`
	Mem     int      `json:"mem"`
	Network bool     `json:"network"`
}

// fillerName is the archive entry holding a pack's filler bytes, outside
// rootfs/ so that a machine created from the pack does not copy them.
const fillerName = "filler"

// writeSmolmachine writes a tar archive holding manifest.json, when filler
// is above 0 an entry of that many pseudo-random bytes (the same for the
// same image), and, when root is not empty, root's directories and regular
// files under rootfs/.
func writeSmolmachine(path string, m *manifest, root string, filler int64) error {
	return writeFileAtomic(path, 0o644, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		data, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(data)), ModTime: time.Now()}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
		if filler > 0 {
			if err := tw.WriteHeader(&tar.Header{Name: fillerName, Mode: 0o644, Size: filler, ModTime: time.Now()}); err != nil {
				return err
			}
			seed := sha256.Sum256([]byte(m.Image))
			if _, err := io.CopyN(tw, rand.NewChaCha8(seed), filler); err != nil {
				return err
			}
		}
		if root != "" {
			if err := addTree(tw, root); err != nil {
				return err
			}
		}
		return tw.Close()
	})
}

// addTree adds root under rootfs/. Symlinks and special files are skipped.
func addTree(tw *tar.Writer, root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.IsDir() && !info.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = "rootfs/" + filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
}

// walkSmolmachine calls fn for each entry of the archive at path.
func walkSmolmachine(path string, fn func(*tar.Header, io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(hdr, tr); err != nil {
			return err
		}
	}
}

var errStop = errors.New("stop walking")

// readManifest reads and checks the manifest of a simulator .smolmachine.
func readManifest(path string) (*manifest, error) {
	var m *manifest
	err := walkSmolmachine(path, func(hdr *tar.Header, r io.Reader) error {
		if hdr.Name != "manifest.json" {
			return nil
		}
		m = &manifest{}
		if err := json.NewDecoder(r).Decode(m); err != nil {
			return err
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("invalid .smolmachine file %s: %v", path, err)
	}
	if m == nil || m.Format != manifestFormat {
		return nil, fmt.Errorf("invalid .smolmachine file %s: missing %s manifest (pass OUT.smolmachine, not the stub)", path, manifestFormat)
	}
	return m, nil
}

// extractRootfs copies the archive's rootfs/ entries into dst, keeping modes.
func extractRootfs(path, dst string) error {
	type dirMode struct {
		path string
		mode fs.FileMode
	}
	var dirs []dirMode
	err := walkSmolmachine(path, func(hdr *tar.Header, r io.Reader) error {
		rel, ok := strings.CutPrefix(hdr.Name, "rootfs/")
		rel = strings.TrimSuffix(rel, "/")
		if !ok || rel == "" {
			return nil
		}
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("unsafe path in archive: %s", hdr.Name)
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		mode := hdr.FileInfo().Mode().Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			dirs = append(dirs, dirMode{target, mode})
			return os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				return err
			}
			if err := f.Chmod(mode); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range dirs { // after the files, so read-only dirs could be filled
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// stubScript is the OUT file of `pack create`: the real one is a packed
// executable; the simulator's only explains itself.
const stubScript = `#!/bin/sh
# smolvm-sim packed stub (test double): the assets are in "$0.smolmachine".
echo "smolvm-sim: packed executables do not run; use: smolvm machine create --from $0.smolmachine" >&2
exit 1
`
