package validate_test

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/validate"
)

func TestEnvKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want string // "" when valid, else the whole reason
	}{
		{"PATH", ""},
		{"_", ""},
		{"_X1", ""},
		{"a_b9", ""},
		{"", "key must not be empty"},
		{"1A", "a key of 2 bytes is not a valid name: it starts with a digit"},
		{"A=B", "a key of 3 bytes is not a valid name: byte 2 is not an ASCII letter, digit or '_'"},
		{"A-B", "a key of 3 bytes is not a valid name: byte 2 is not an ASCII letter, digit or '_'"},
		{"É", "a key of 2 bytes is not a valid name: byte 1 is not an ASCII letter, digit or '_'"},
		// A secret typed where the name belongs: the error must not echo it.
		{"sk-live-4f9a8b7c6d5e", "a key of 20 bytes is not a valid name: byte 3 is not an ASCII letter, digit or '_'"},
		{"API KEY", "a key of 7 bytes is not a valid name: byte 4 is not an ASCII letter, digit or '_'"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			err := validate.EnvKey(tt.key)
			if got := reason(err); got != tt.want {
				t.Errorf("EnvKey(%q) = %q, want %q", tt.key, got, tt.want)
			}
			if err != nil && len(tt.key) > 1 && strings.Contains(err.Error(), tt.key) {
				t.Errorf("EnvKey(%q) = %q quotes the key", tt.key, err)
			}
		})
	}
}

func TestGuestPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want string // "" when valid, else the start of the reason
	}{
		{"/workspace/in/a.txt", ""},
		{"/a b/c d", ""},
		{"/.hidden", ""},
		{"/a/..b", ""},
		{"/" + strings.Repeat("a", validate.MaxGuestPathLen-1), ""},
		{"", "must not be empty"},
		{"/a\x00", "must not contain a NUL byte"},
		{"/" + strings.Repeat("a", validate.MaxGuestPathLen), "is 4097 bytes, longer than 4096"},
		{"a", `"a" must be an absolute guest path`},
		{"./a", `"./a" must be an absolute guest path`},
		{"/", `must name a file, not "/"`},
		{"/a:b", `"/a:b" must not contain ':'`},
		{"/a/../b", `"/a/../b" must not contain a ".." segment`},
		{"/..", `"/.." must not contain a ".." segment`},
		{"/a/", `"/a/" must be clean (it cleans to "/a")`},
		{"/a/./b", `"/a/./b" must be clean (it cleans to "/a/b")`},
		{"//a", `"//a" must be clean (it cleans to "/a")`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			got := reason(validate.GuestPath(tt.path))
			if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
				t.Errorf("GuestPath(%q) = %q, want %q…", tt.path, got, tt.want)
			}
		})
	}
}

// TestHost covers what every caller relies on: the parsed fields, and a
// reason that completes a sentence starting with the quoted entry. The
// grammar in full is tested through egress.ParseHost.
func TestHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want validate.HostPattern
		err  string
	}{
		{in: "API.Example.com", want: validate.HostPattern{Host: "api.example.com"}},
		{in: "*.example.com:443", want: validate.HostPattern{Host: "example.com", Wildcard: true, Port: 443}},
		{in: "[2001:DB8::1]:8443", want: validate.HostPattern{Host: "2001:db8::1", Port: 8443}},
		{in: "::ffff:1.2.3.4", want: validate.HostPattern{Host: "1.2.3.4"}},
		{in: "", err: "is empty"},
		{in: "a..b", err: "has an empty label (.. or a leading or trailing dot)"},
		{in: "x.com:0", err: "has a port that is not a number from 1 to 65535"},
		{in: "*.com", err: "is a wildcard of a top-level domain; use *.example.com or narrower"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := validate.Host(tt.in)
			if got != tt.want || reason(err) != tt.err {
				t.Errorf("Host(%q) = %+v, %q; want %+v, %q", tt.in, got, reason(err), tt.want, tt.err)
			}
		})
	}
}

func reason(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
