package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cp handles `machine cp SRC DST`; one side is MACHINE:PATH.
func (a *app) cp(args []string) error {
	p, err := parseArgs(args, a.cpFlags(), false)
	if err != nil {
		return err
	}
	pos := append(p.pos, p.rest...)
	switch {
	case len(pos) < 2:
		return missing("<SRC> <DST>")
	case len(pos) > 2:
		return usagef("unexpected argument '%s' found", pos[2])
	}
	var mode *os.FileMode // nil keeps the source's
	if p.has("mode") {
		n, err := strconv.ParseUint(p.get("mode"), 8, 32)
		if err != nil || n > 0o7777 {
			return usagef("invalid value '%s' for '%s': expected an octal mode", p.get("mode"), flagMode.display())
		}
		m := os.FileMode(n)
		mode = &m
	}
	src, dst := pos[0], pos[1]
	var name, guest string
	upload := false
	if n, g, ok := strings.Cut(src, ":"); ok { // SRC is checked first
		name, guest = n, g
	} else if n, g, ok := strings.Cut(dst, ":"); ok {
		name, guest, upload = n, g, true
	} else {
		return configErr("cp", "one of SRC or DST must use machine:path syntax (e.g. myvm:/path/in/guest)")
	}
	a.call.Name = name
	if err := a.gate("cp"); err != nil {
		return err
	}
	_, st, err := a.running(name, false)
	if err != nil {
		return err
	}
	gp, err := guestPath(st.root(name), guest)
	if err != nil {
		return configErr("cp", err.Error())
	}
	if upload {
		if err := os.MkdirAll(filepath.Dir(gp), 0o755); err != nil {
			return configErr("cp", err.Error())
		}
		err = copyFile(src, gp, mode)
	} else {
		if info, statErr := os.Stat(dst); statErr == nil && info.IsDir() {
			dst = filepath.Join(dst, filepath.Base(gp))
		}
		err = copyFile(gp, dst, nil)
	}
	if err != nil {
		return configErr("cp", err.Error())
	}
	return nil
}

// copyFile copies one regular file atomically, with mode if it is set and
// the source's permission bits otherwise.
func copyFile(src, dst string, mode *os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return errors.New(src + " is not a regular file")
	}
	perm := info.Mode().Perm()
	if mode != nil {
		perm = *mode
	}
	return writeFileAtomic(dst, perm, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
