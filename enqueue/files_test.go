package enqueue_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/tasks"
)

func TestAttachFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(script, 0o750); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 600), 0o644); err != nil {
		t.Fatal(err)
	}

	var p tasks.AgentRun
	if err := enqueue.AttachFile(&p, script, "/workspace/run.sh", 0); err != nil {
		t.Fatal(err)
	}
	if len(p.Files) != 1 || p.Files[0].Path != "/workspace/run.sh" || p.Files[0].Mode != "0750" || string(p.Files[0].Content) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("files = %+v", p.Files)
	}
	if err := enqueue.AttachFile(&p, big, "/workspace/big", 1000); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, local, guest string
		max                int64
		wantField, wantIn  string
	}{
		{"relative guest path", big, "workspace/x", 0, "files[2].path", "absolute"},
		{"colon in guest path", big, "/w/a:b", 0, "files[2].path", "':'"},
		{"unclean guest path", big, "/w/../x", 0, "files[2].path", `".."`},
		{"duplicate guest path", big, "/workspace/big", 0, "files[2].path", "files[1].path"},
		{"over the cap in total", big, "/workspace/big2", 1000, "files", "1.2 KiB (1218 bytes) in total, over the cap of 1000 bytes"},
		{"missing local file", filepath.Join(dir, "none"), "/x", 0, "", "no such file"},
		{"a directory", dir, "/x", 0, "", "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := p
			q.Files = append([]tasks.File(nil), p.Files...)
			err := enqueue.AttachFile(&q, tt.local, tt.guest, tt.max)
			var ve *tasks.ValidationError
			if err == nil || !strings.Contains(err.Error(), tt.wantIn) || (tt.wantField != "" && (!errors.As(err, &ve) || ve.Field != tt.wantField)) {
				t.Errorf("err = %v, want field %q containing %q", err, tt.wantField, tt.wantIn)
			}
			if len(q.Files) != 2 {
				t.Errorf("a refused file changed the payload: %d files", len(q.Files))
			}
		})
	}
}

// A producer attaches a local file to the payload; the worker writes it into
// the VM before the command, with the local file's permission bits.
func ExampleAttachFile() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	local := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(local, []byte("hello"), 0o600); err != nil {
		log.Fatal(err)
	}

	p := tasks.AgentRun{
		Image:     "alpine:3",
		Workdir:   "/workspace",
		Command:   []string{"sh", "-c", "mkdir -p out && wc -c < in/notes.txt > out/count"},
		Artifacts: []string{"/workspace/out/count"},
	}
	if err := enqueue.AttachFile(&p, local, "/workspace/in/notes.txt", 0); err != nil {
		log.Fatal(err) // a bad guest path, or over the cap: nothing attached
	}
	f := p.Files[0]
	fmt.Println(f.Path, f.Mode, len(f.Content), "bytes")
	// Output: /workspace/in/notes.txt 0600 5 bytes
}
