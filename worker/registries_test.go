package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

func TestImageRegistry(t *testing.T) {
	t.Parallel()
	digest := "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tt := range []struct {
		ref, want string
	}{
		{"alpine", "docker.io"},
		{"alpine:3", "docker.io"},
		{"alpine" + digest, "docker.io"},
		{"alpine:3" + digest, "docker.io"},
		{"library/alpine:3", "docker.io"},
		{"org/team/agent:1", "docker.io"},
		{"my_org/agent__x/a-b.c", "docker.io"},
		{"docker.io/library/alpine:3", "docker.io"},
		{"index.docker.io/library/alpine", "docker.io"},
		{"Docker.IO/library/alpine", "docker.io"},
		{"ghcr.io/org/agent:1", "ghcr.io"},
		{"GHCR.io/org/agent", "ghcr.io"},
		{"quay.io/org/agent" + digest, "quay.io"},
		{"localhost/agent", "localhost"},
		{"localhost:5000/agent:dev", "localhost:5000"},
		{"registry.internal:443/team/agent", "registry.internal:443"},
		{"reg:5000/agent", "reg:5000"}, // a port makes it a registry
		{"Reg/agent", "reg"},           // upper case makes it a registry
		{"10.0.0.7:5000/agent", "10.0.0.7:5000"},
		{"[::1]:5000/agent:1", "[::1]:5000"},
		{"[2001:db8::1]/agent", "[2001:db8::1]"},
		{"localhost", "docker.io"}, // a lone name is an image on Docker Hub
	} {
		got, err := imageRegistry(tt.ref)
		if err != nil || got != tt.want {
			t.Errorf("ImageRegistry(%q) = %q, %v; want %q", tt.ref, got, err, tt.want)
		}
	}
	for _, bad := range []string{
		"", "Alpine", "alpine:", "alpine:3:4", "alpine@sha256:abc", "alpine@sha256", ":3",
		"ghcr.io/", "ghcr.io//agent", "/agent", "ghcr.io/Org/agent", "a..b/agent", "-x/agent",
		"ghcr.io/agent:-tag", "ghcr.io:/agent", "ghcr.io:port/agent", "user@ghcr.io/agent",
		"ghcr.io\\@docker.io/agent", "docker.io#@ghcr.io/agent", "ghcr.io/agent?x", "[::1/agent",
		"[zz::1]:5000/agent", "[10.0.0.1]/agent", "bad_host.io/agent", "x-.io/agent", "alpine 3",
		"alpine:" + strings.Repeat("t", 129), strings.Repeat("a/", 128) + "a",
	} {
		if got, err := imageRegistry(bad); err == nil {
			t.Errorf("ImageRegistry(%q) = %q, want an error", bad, got)
		}
	}
}

func TestParseRegistries(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		DefaultRegistries:                    {"docker.io", "ghcr.io", "quay.io"},
		" GHCR.io , localhost:5000,,ghcr.io": {"ghcr.io", "localhost:5000"},
		"index.docker.io":                    {"docker.io"},
		"[::1]:5000":                         {"[::1]:5000"},
		"*":                                  {"*"},
	} {
		got, err := ParseRegistries(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseRegistries(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", " , ", "*,ghcr.io", "ghcr.io/org", "https://ghcr.io", "ghcr.io:x", "bad_host", "[::1"} {
		if got, err := ParseRegistries(bad); err == nil {
			t.Errorf("ParseRegistries(%q) = %q, want an error", bad, got)
		}
	}
}

// TestHandlerRegistries: an image from a registry the worker does not pull
// from is bad input: archived on first delivery with one line naming
// image, and no smolvm call at all. The default list pulls Docker Hub
// images such as alpine:3; AnyRegistry pulls anything well formed.
func TestHandlerRegistries(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		registries []string
		image      string
		want       string // "" for allowed, else a part of the error
	}{
		{"default allows docker hub", nil, "alpine:3", ""},
		{"default allows ghcr", nil, "ghcr.io/org/agent:1", ""},
		{"default refuses another", nil, "evil.example/agent:1", `image: "evil.example/agent:1" is on registry evil.example, which this worker does not pull from; it pulls from docker.io, ghcr.io, quay.io`},
		{"default refuses localhost", nil, "localhost:5000/agent", "registry localhost:5000,"},
		{"docker hub refused by name", []string{"ghcr.io"}, "alpine:3", `image: "alpine:3" is on registry docker.io (a reference naming no registry is on docker.io), which`},
		{"port must match", []string{"registry.internal"}, "registry.internal:5000/agent", "registry registry.internal:5000,"},
		{"private registry", []string{"registry.internal:5000"}, "registry.internal:5000/agent", ""},
		{"malformed", []string{AnyRegistry}, "ghcr.io/Org/agent", `image: "ghcr.io/Org/agent": not an image reference`},
		{"any", []string{AnyRegistry}, "evil.example/agent", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			h, _ := newHandler(t, f, func(c *Config) { c.Registries = tt.registries })
			p := basic
			p.Image = tt.image
			err := h.Run(context.Background(), Meta{ID: "reg"}, payload(t, p), nil)
			if tt.want == "" {
				if err != nil || f.count("pack-image") != 1 {
					t.Fatalf("err = %v, calls %q; want the image packed", err, f.ops())
				}
				return
			}
			var ve *tasks.ValidationError
			if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &ve) || ve.Field != "image" {
				t.Fatalf("err = %v, want a SkipRetry validation error of image", err)
			}
			if msg := ve.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q, want one line with %q", msg, tt.want)
			}
			if n := len(f.ops()); n != 0 {
				t.Errorf("%d smolvm calls, want 0: %q", n, f.ops())
			}
		})
	}
}

func TestNewHandlerRegistries(t *testing.T) {
	t.Parallel()
	_, err := NewHandler(Config{Smolvm: newFake(), DataDir: t.TempDir(), Registries: []string{"ghcr.io", "https://quay.io"}})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "Registries" {
		t.Errorf("err = %v, want a ConfigError of Registries", err)
	}
}
