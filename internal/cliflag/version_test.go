package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionFlag: -version prints the command's name, version and Go
// release on one line and exits 0; without it nothing is printed; a
// command with a -version of its own keeps it.
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	fs, _, _ := newFS()
	var out bytes.Buffer
	_, err := Parse(fs, []string{"-n", "3", "-version"}, envs, func(string) string { return "" }, "Usage: x", &out)
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("err = %v, want ErrVersion", err)
	}
	want := "x " + buildVersion() + " (" + runtime.Version() + ")\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	var stderr bytes.Buffer
	if code := ExitCode(&stderr, "x", err); code != 0 || stderr.Len() != 0 {
		t.Errorf("ExitCode = %d, printed %q", code, stderr.String())
	}

	fs, _, _ = newFS()
	out.Reset()
	if _, err := Parse(fs, nil, envs, func(string) string { return "" }, "Usage: x", &out); err != nil || out.Len() != 0 {
		t.Errorf("without -version: err %v, printed %q", err, out.String())
	}
	if fs.Lookup("version") == nil {
		t.Error("-version is not registered, so -h does not list it")
	}

	own := flag.NewFlagSet("sim", flag.ContinueOnError)
	mine := own.String("version", "", "the command's own")
	if _, err := Parse(own, []string{"-version", "1.2"}, nil, func(string) string { return "" }, "Usage: sim", &out); err != nil || *mine != "1.2" {
		t.Errorf("a command's own -version: err %v, value %q", err, *mine)
	}
}

func TestVersionOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"release", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"pseudo-version", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101000000-abcdef123456+dirty"}}, "v0.0.0-20260101000000-abcdef123456+dirty"},
		{"nothing recorded", debug.BuildInfo{}, "(devel)"},
		{"devel from a checkout", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, "(devel) 0123456789ab+dirty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := versionOf(&tt.bi); got != tt.want {
				t.Errorf("versionOf = %q, want %q", got, tt.want)
			}
		})
	}
	if v := buildVersion(); v == "" || strings.ContainsAny(v, "\n") {
		t.Errorf("buildVersion() = %q", v)
	}
}
