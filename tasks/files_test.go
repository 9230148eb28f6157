package tasks_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// withFiles returns a valid payload carrying files and artifacts.
func withFiles(files []tasks.File, artifacts ...string) tasks.AgentRun {
	return tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Files: files, Artifacts: artifacts}
}

func file(path string, n int, mode string) tasks.File {
	return tasks.File{Path: path, Content: []byte(strings.Repeat("x", n)), Mode: mode}
}

// digest is a well-formed SHA-256 for refs (whose bytes the tasks package
// never sees).
const digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// refFile is a file whose bytes wait in the store under the default
// tenant's input key name.
func refFile(path, name string, size int64) tasks.File {
	return tasks.File{Path: path, Ref: &tasks.FileRef{Key: tasks.InputKey(tasks.DefaultTenant, name), SHA256: digest, Size: size}}
}

// withRef is refFile with one of its Ref's fields changed.
func withRef(f tasks.File, change func(*tasks.FileRef)) tasks.File {
	r := *f.Ref
	change(&r)
	f.Ref = &r
	return f
}

// TestFilesValidation: each bad file or artifact is one *ValidationError
// naming the entry, whether it comes through Decode, Validate or
// NewAgentRun.
func TestFilesValidation(t *testing.T) {
	t.Parallel()
	ok := file("/workspace/in/a.txt", 3, "")
	tests := []struct {
		name      string
		p         tasks.AgentRun
		wantField string
		wantIn    string
	}{
		{"relative path", withFiles([]tasks.File{ok, file("in/b.txt", 1, "")}), "files[1].path", "absolute"},
		{"colon in path", withFiles([]tasks.File{file("/in/a:b", 1, "")}), "files[0].path", "':'"},
		{"dotdot segment", withFiles([]tasks.File{file("/in/../etc/passwd", 1, "")}), "files[0].path", `".."`},
		{"unclean path", withFiles([]tasks.File{file("/in//a", 1, "")}), "files[0].path", "clean"},
		{"trailing slash", withFiles([]tasks.File{file("/in/", 1, "")}), "files[0].path", "clean"},
		{"dot segment", withFiles([]tasks.File{file("/in/./a", 1, "")}), "files[0].path", "clean"},
		{"root", withFiles([]tasks.File{file("/", 1, "")}), "files[0].path", `"/"`},
		{"empty path", withFiles([]tasks.File{file("", 1, "")}), "files[0].path", "empty"},
		{"NUL in path", withFiles([]tasks.File{file("/a\x00b", 1, "")}), "files[0].path", "NUL"},
		{"invalid UTF-8", withFiles([]tasks.File{file("/a\xff", 1, "")}), "files[0].path", "UTF-8"},
		{"duplicate path", withFiles([]tasks.File{ok, file("/x", 1, ""), file("/workspace/in/a.txt", 1, "")}), "files[2].path", "files[0].path"},
		{"mode not octal", withFiles([]tasks.File{ok, file("/b", 1, "0689")}), "files[1].mode", "octal"},
		{"mode too short", withFiles([]tasks.File{file("/b", 1, "7")}), "files[0].mode", "octal"},
		{"mode with 0o", withFiles([]tasks.File{file("/b", 1, "0o644")}), "files[0].mode", "octal"},
		{"setuid mode", withFiles([]tasks.File{file("/b", 1, "4755")}), "files[0].mode", "0777"},
		{"too many files", withFiles(make([]tasks.File, tasks.MaxFiles+1)), "files", "more than"},
		{"over the hard limit", withFiles([]tasks.File{file("/a", tasks.MaxFilesBytesLimit, ""), file("/b", 1, "")}), "files", "hard limit of 16 MiB"},
		{"relative artifact", withFiles(nil, "/ok", "out/A.txt"), "artifacts[1]", "absolute"},
		{"colon in artifact", withFiles(nil, "/out/a:b"), "artifacts[0]", "':'"},
		{"dotdot artifact", withFiles(nil, "/out/.."), "artifacts[0]", `".."`},
		{"unclean artifact", withFiles(nil, "/out/./a"), "artifacts[0]", "clean"},
		{"root artifact", withFiles(nil, "/"), "artifacts[0]", `"/"`},
		{"duplicate artifact", withFiles(nil, "/a", "/a"), "artifacts[1]", "artifacts[0]"},
		{"too many artifacts", withFiles(nil, make([]string, tasks.MaxArtifacts+1)...), "artifacts", "more than"},
		{"ref with content", withFiles([]tasks.File{ok, func() tasks.File { f := refFile("/b", "in1", 3); f.Content = []byte("abc"); return f }()}),
			"files[1].ref", "together with content"},
		{"ref of another tenant", withFiles([]tasks.File{withRef(refFile("/b", "in1", 3), func(r *tasks.FileRef) { r.Key = "inputs/other/in1" })}),
			"files[0].ref.key", `must start with "inputs/default/"`},
		{"ref outside inputs", withFiles([]tasks.File{withRef(refFile("/b", "in1", 3), func(r *tasks.FileRef) { r.Key = "commits/default/T1.smolmachine" })}),
			"files[0].ref.key", "own tenant's input files"},
		{"ref with a tenant prefix only", withFiles([]tasks.File{withRef(refFile("/b", "in1", 3), func(r *tasks.FileRef) { r.Key = "inputs/default-2/x" })}),
			"files[0].ref.key", `must start with "inputs/default/"`},
		{"ref with an empty name", withFiles([]tasks.File{refFile("/b", "", 3)}), "files[0].ref.key", "1 to 128"},
		{"ref name with a slash", withFiles([]tasks.File{refFile("/b", "a/../../commits/x", 3)}), "files[0].ref.key", "may hold only"},
		{"ref name starting with a dot", withFiles([]tasks.File{refFile("/b", ".bottleq-tmp", 3)}), "files[0].ref.key", "must not start with '.'"},
		{"ref name too long", withFiles([]tasks.File{refFile("/b", strings.Repeat("a", 129), 3)}), "files[0].ref.key", "1 to 128"},
		{"ref digest upper case", withFiles([]tasks.File{withRef(refFile("/b", "in1", 3), func(r *tasks.FileRef) { r.SHA256 = strings.ToUpper(digest) })}),
			"files[0].ref.sha256", "64 lowercase hex"},
		{"ref digest short", withFiles([]tasks.File{withRef(refFile("/b", "in1", 3), func(r *tasks.FileRef) { r.SHA256 = digest[:63] })}),
			"files[0].ref.sha256", "64 lowercase hex"},
		{"ref digest missing", withFiles([]tasks.File{withRef(refFile("/b", "in1", 3), func(r *tasks.FileRef) { r.SHA256 = "" })}),
			"files[0].ref.sha256", "64 lowercase hex"},
		{"ref size negative", withFiles([]tasks.File{refFile("/b", "in1", -1)}), "files[0].ref.size", "negative"},
		{"ref size over the hard limit", withFiles([]tasks.File{refFile("/b", "in1", tasks.MaxFilesBytesLimit+1)}), "files[0].ref.size", "hard limit"},
		{"refs together over the hard limit", withFiles([]tasks.File{refFile("/a", "in1", tasks.MaxFilesBytesLimit), file("/b", 1, "")}),
			"files", "hard limit of 16 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			check := func(how string, err error) {
				t.Helper()
				var ve *tasks.ValidationError
				if !errors.As(err, &ve) || ve.Field != tt.wantField {
					t.Fatalf("%s: err = %v, want a *ValidationError for %s", how, err, tt.wantField)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, tt.wantField+": ") || !strings.Contains(msg, tt.wantIn) || strings.ContainsAny(msg, "\r\n") {
					t.Errorf("%s: error %q: want one line starting %q and containing %s", how, msg, tt.wantField+": ", tt.wantIn)
				}
			}
			check("Validate", tt.p.Validate())
			_, err := tasks.NewAgentRunWithMaxFilesBytes(tt.p, tasks.MaxFilesBytesLimit)
			check("NewAgentRun", err)
			if tt.name == "invalid UTF-8" {
				return // JSON cannot carry it: it becomes U+FFFD
			}
			b, err := json.Marshal(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tasks.Decode(b)
			check("Decode", err)
		})
	}
}

// TestFilesCap: NewAgentRun caps the files' total at DefaultMaxFilesBytes,
// NewAgentRunWithMaxFilesBytes at its cap (zero keeps the default); Decode
// takes up to the hard limit, leaving the cap to the worker.
func TestFilesCap(t *testing.T) {
	t.Parallel()
	mib := 1 << 20
	const useDefault = -1 // NewAgentRun rather than NewAgentRunWithMaxFilesBytes
	tests := []struct {
		name    string
		files   []tasks.File
		cap     int64
		wantErr string
	}{
		{"exactly the default cap", []tasks.File{file("/a", mib/2, ""), file("/b", mib/2, "0755")}, useDefault, ""},
		{"over the default cap", []tasks.File{file("/a", mib, ""), file("/b", mib/2, "")}, useDefault,
			"files: 1.5 MiB in total, over the cap of 1 MiB (tasks.NewAgentRunWithMaxFilesBytes raises it for workers whose -max-files-bytes allows more)"},
		{"zero cap is the default", []tasks.File{file("/a", mib, ""), file("/b", 1, "")}, 0,
			"files: 1 MiB (1048577 bytes) in total, over the cap of 1 MiB"},
		{"raised cap", []tasks.File{file("/a", 3*mib, "")}, 4 << 20, ""},
		{"lowered cap", []tasks.File{file("/a", 2000, "")}, 1000, "files: 2 KiB (2000 bytes) in total, over the cap of 1000 bytes"},
		{"cap over the hard limit", []tasks.File{file("/a", tasks.MaxFilesBytesLimit, ""), file("/b", 1, "")}, 2 * tasks.MaxFilesBytesLimit,
			"files: 16 MiB (16777217 bytes) in total, over the hard limit of 16 MiB"},
		{"a ref's size counts", []tasks.File{refFile("/a", "in1", int64(mib)), file("/b", 1, "")}, useDefault,
			"files: 1 MiB (1048577 bytes) in total, over the cap of 1 MiB"},
		{"refs within the cap", []tasks.File{refFile("/a", "in1", int64(mib/2)), refFile("/b", "in2", int64(mib/2))}, useDefault, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := withFiles(tt.files, "/out/a")
			var task *asynq.Task
			var err error
			if tt.cap == useDefault {
				task, err = tasks.NewAgentRun(p)
			} else {
				task, err = tasks.NewAgentRunWithMaxFilesBytes(p, tt.cap)
			}
			if tt.wantErr != "" {
				var ve *tasks.ValidationError
				if task != nil || !errors.As(err, &ve) || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := tasks.Decode(task.Payload())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.FilesBytes() != p.FilesBytes() || len(got.Files) != len(p.Files) || got.Artifacts[0] != "/out/a" {
				t.Errorf("decoded %d bytes in %d files, want %d in %d", got.FilesBytes(), len(got.Files), p.FilesBytes(), len(p.Files))
			}
			info := enqueued(t, task)
			if info.Queue != tasks.DefaultQueue {
				t.Errorf("queue = %q", info.Queue)
			}
		})
	}
}

// TestDecodeFiles: content is base64, the mode an octal string, and a
// payload with the hard limit of files fits while its other fields are
// still capped.
func TestDecodeFiles(t *testing.T) {
	t.Parallel()
	p, err := tasks.Decode([]byte(`{"image":"a","command":["x"],"files":[{"path":"/in/a","content":"aGVsbG8=","mode":"0755"},{"path":"/in/b","content":""}],"artifacts":["/out/a"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Files[0].Content) != "hello" || p.Files[0].Mode != "0755" || len(p.Files[1].Content) != 0 || p.Artifacts[0] != "/out/a" {
		t.Errorf("decoded %+v", p)
	}
	for _, tt := range []struct {
		f    tasks.File
		want fs.FileMode
	}{{p.Files[0], 0o755}, {p.Files[1], 0o644}, {tasks.File{Mode: "600"}, 0o600}, {tasks.File{Mode: "0000"}, 0}} {
		if got, err := tt.f.Perm(); err != nil || got != tt.want {
			t.Errorf("Perm(%q) = %o, %v; want %o", tt.f.Mode, got, err, tt.want)
		}
	}

	big := withFiles([]tasks.File{file("/a", tasks.MaxFilesBytesLimit, "")})
	b, _ := json.Marshal(big)
	if got, err := tasks.Decode(b); err != nil || got.FilesBytes() != tasks.MaxFilesBytesLimit {
		t.Errorf("a payload with the hard limit of files: %v", err)
	}
	big.Command = []string{strings.Repeat("a", 60<<10), strings.Repeat("b", 60<<10), strings.Repeat("c", 60<<10), strings.Repeat("d", 60<<10), strings.Repeat("e", 60<<10)}
	b, _ = json.Marshal(big)
	var ve *tasks.ValidationError
	if _, err := tasks.Decode(b); !errors.As(err, &ve) || ve.Field != "payload" {
		t.Errorf("files do not lift the cap on the rest: %v", err)
	}
	huge := append([]byte(`{"image":"a","command":["x"],"files":[{"path":"/a","content":"`), make([]byte, 23<<20)...)
	if _, err := tasks.Decode(huge); !errors.As(err, &ve) || ve.Field != "payload" {
		t.Errorf("a payload over the hard limit: %v", err)
	}
}

// TestDecodeFileRef: a file's ref travels as {key, sha256, size} with no
// content, and FilesBytes counts its size; a tenant's payload names its
// own inputs.
func TestDecodeFileRef(t *testing.T) {
	t.Parallel()
	p, err := tasks.Decode([]byte(`{"tenant":"acme","image":"a","command":["x"],"files":[` +
		`{"path":"/in/a","ref":{"key":"inputs/acme/0f3a.bin","sha256":"` + digest + `","size":716800},"mode":"0755"},` +
		`{"path":"/in/b","content":"aGk="}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := p.Files[0].Ref
	if r == nil || r.Key != "inputs/acme/0f3a.bin" || r.SHA256 != digest || r.Size != 716800 || len(p.Files[0].Content) != 0 || p.Files[1].Ref != nil {
		t.Fatalf("decoded %+v", p.Files)
	}
	if got := p.FilesBytes(); got != 716800+2 {
		t.Errorf("FilesBytes = %d, want %d", got, 716800+2)
	}
	b, err := json.Marshal(p.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"path":"/in/a","ref":{"key":"inputs/acme/0f3a.bin","sha256":"` + digest + `","size":716800},"mode":"0755"}`; string(b) != want {
		t.Errorf("encoded %s\nwant    %s", b, want)
	}
	// The same key under the default tenant is another tenant's.
	var ve *tasks.ValidationError
	if _, err := tasks.Decode([]byte(`{"image":"a","command":["x"],"files":[{"path":"/in/a","ref":{"key":"inputs/acme/0f3a.bin","sha256":"` + digest + `","size":1}}]}`)); !errors.As(err, &ve) || ve.Field != "files[0].ref.key" {
		t.Errorf("default tenant naming acme's input: %v", err)
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		0: "0 bytes", 1023: "1023 bytes", 1024: "1 KiB", 1536: "1.5 KiB", 1 << 20: "1 MiB",
		3 << 19: "1.5 MiB", 64 << 20: "64 MiB", 256 << 20: "256 MiB", 5 << 30: "5 GiB",
		1<<20 + 1: "1 MiB (1048577 bytes)", 2000: "2 KiB (2000 bytes)",
	} {
		if got := tasks.FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
