package testbin

import (
	"slices"
	"testing"
)

func TestStaticEnv(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		in, out []string
	}{
		{"no GOFLAGS", []string{"HOME=/h"}, []string{"HOME=/h", "CGO_ENABLED=0"}},
		{"race alone", []string{"GOFLAGS=-race"}, []string{"GOFLAGS=", "CGO_ENABLED=0"}},
		{"race among others", []string{"GOFLAGS=-mod=mod -race -trimpath", "CGO_ENABLED=1"},
			[]string{"GOFLAGS=-mod=mod -trimpath", "CGO_ENABLED=1", "CGO_ENABLED=0"}},
		{"race=true", []string{"GOFLAGS=--race=true"}, []string{"GOFLAGS=", "CGO_ENABLED=0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := StaticEnv(tt.in); !slices.Equal(got, tt.out) {
				t.Errorf("StaticEnv(%q) = %q, want %q", tt.in, got, tt.out)
			}
		})
	}
}
