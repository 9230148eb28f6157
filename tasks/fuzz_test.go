package tasks_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/bot-bottle/bottleq/tasks"
)

// FuzzDecode checks Decode on arbitrary bytes: it never panics, every error
// is a *tasks.ValidationError, and a payload it accepts is valid and
// survives a marshal and decode unchanged. Seeds beyond these are in
// testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"image":"alpine","command":["true"]}`,
		`{"version":1,"from":"task:abc","command":["a","b"],"env":{"K":"v"},"workdir":"/w","timeout":"90s","commit":false}`,
		`{"from":"/p/x.smolmachine","command":["x"],"timeout":1.5}`,
		`{"image":"alpine","command":["true"],"env":{}}`,
		`{"image":"a","command":["x"],"files":[{"path":"/in/a","content":"aGk=","mode":"0755"}],"artifacts":["/out/a"]}`,
		`{"image":"a","command":["x"],"files":[],"artifacts":[]}`,
		`{"tenant":"acme-2","image":"alpine","command":["true"],"cpus":255,"mem_mib":1048576}`,
		`{"tenant":"Acme","image":"alpine","command":["true"],"cpus":256,"mem_mib":-1}`,
		`{"image":"-x","command":[""]}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := tasks.Decode(data)
		if err != nil {
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decode error %v is a %T, want a *tasks.ValidationError", err, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Decode accepted a payload that Validate rejects: %v", err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := tasks.Decode(b)
		if err != nil {
			t.Fatalf("Decode(Marshal(p)): %v\npayload %s", err, b)
		}
		if !reflect.DeepEqual(normal(back), normal(p)) {
			t.Fatalf("round trip changed the payload:\n%#v\nbecame\n%#v", p, back)
		}
	})
}

// normal equates an empty env, list of hosts, files or artifacts with none,
// which omitempty cannot tell apart.
func normal(p tasks.AgentRun) tasks.AgentRun {
	if len(p.Env) == 0 {
		p.Env = nil
	}
	if len(p.AllowHosts) == 0 {
		p.AllowHosts = nil
	}
	if len(p.Files) == 0 {
		p.Files = nil
	}
	if len(p.Artifacts) == 0 {
		p.Artifacts = nil
	}
	return p
}
