package worker

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestPackTTL: Config.PackTTL zero is DefaultPackTTL, a negative one keeps a
// tagged image's pack forever, and a digest-pinned image's pack is kept
// forever whatever the TTL.
func TestPackTTL(t *testing.T) {
	t.Parallel()
	const pinnedImage = "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tt := range []struct {
		name  string
		ttl   time.Duration
		image string
		age   time.Duration
		hit   bool
	}{
		{"zero, pack younger than the default", 0, "alpine:3", DefaultPackTTL - time.Hour, true},
		{"zero, pack older than the default", 0, "alpine:3", DefaultPackTTL + time.Hour, false},
		{"an hour, pack younger", time.Hour, "alpine:3", 30 * time.Minute, true},
		{"an hour, pack older", time.Hour, "alpine:3", 2 * time.Hour, false},
		{"forever", PackTTLForever, "alpine:3", 1000 * time.Hour, true},
		{"any negative", -time.Hour, "alpine:3", 1000 * time.Hour, true},
		{"digest-pinned", time.Hour, pinnedImage, 1000 * time.Hour, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			h, _ := newHandler(t, f, func(c *Config) { c.PackTTL = tt.ttl })
			ctx := context.Background()
			p, hit, err := h.packs.Get(ctx, tt.image)
			if err != nil || hit {
				t.Fatalf("first Get = hit %v, %v; want a miss", hit, err)
			}
			then := time.Now().Add(-tt.age)
			if err := os.Chtimes(p.Machine, then, then); err != nil {
				t.Fatal(err)
			}
			if _, hit, err = h.packs.Get(ctx, tt.image); err != nil || hit != tt.hit {
				t.Errorf("Get of a pack %v old = hit %v, %v; want hit %v", tt.age, hit, err, tt.hit)
			}
			if n := f.count("pack-image"); n != map[bool]int{true: 1, false: 2}[tt.hit] {
				t.Errorf("image packed %d times", n)
			}
		})
	}
}
