package enqueue

import (
	"fmt"
	"io"
	"os"

	"github.com/bot-bottle/bottleq/tasks"
)

// AttachFile reads the local file localPath and adds it to p.Files at
// guestPath, with the local file's permission bits as its mode. maxBytes
// caps the total content of p.Files after it is added (zero means
// tasks.DefaultMaxFilesBytes, what workers accept by default). A bad guest
// path, a guest path already in p.Files, a local file that is not a regular
// file, or one over the cap is an error and p is left unchanged; errors
// about the payload are *tasks.ValidationError.
//
// A directory travels as a tar file the command unpacks.
func AttachFile(p *tasks.AgentRun, localPath, guestPath string, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = tasks.DefaultMaxFilesBytes
	}
	field := fmt.Sprintf("files[%d].path", len(p.Files))
	if err := tasks.ValidateGuestPath(field, guestPath); err != nil {
		return err
	}
	for i, f := range p.Files {
		if f.Path == guestPath {
			return &tasks.ValidationError{Field: field, Reason: fmt.Sprintf("%q is also files[%d].path", guestPath, i)}
		}
	}
	if len(p.Files) >= tasks.MaxFiles {
		return &tasks.ValidationError{Field: "files", Reason: fmt.Sprintf("has %d entries already, the most a payload may have", len(p.Files))}
	}
	f, err := os.Open(localPath)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (a directory travels as a tar file the command unpacks)", localPath)
	}
	room := maxBytes - p.FilesBytes()
	tooBig := func(size int64) error {
		return &tasks.ValidationError{Field: "files", Reason: fmt.Sprintf("%s is %s, which makes %s in total, over the cap of %s",
			localPath, tasks.FormatBytes(size), tasks.FormatBytes(p.FilesBytes()+size), tasks.FormatBytes(maxBytes))}
	}
	if info.Size() > room {
		return tooBig(info.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, room+1))
	if err != nil {
		return err
	}
	if int64(len(data)) > room { // it grew while read
		return tooBig(int64(len(data)))
	}
	p.Files = append(p.Files, tasks.File{Path: guestPath, Content: data, Mode: fmt.Sprintf("%04o", uint32(info.Mode().Perm()))})
	return nil
}
