package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/worker"
)

// TestWarmFlags: -warm, -warm-max and -warm-max-age, or their variables,
// reach the config; none is the default; a bad value is one line naming
// the flag or variable it came from.
func TestWarmFlags(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.warm) != 0 || c.warmMax != 0 || c.warmMaxAge != worker.DefaultWarmMaxAge {
		t.Errorf("defaults: warm %v, max %d, max age %s; want none, 0, %s", c.warm, c.warmMax, c.warmMaxAge, worker.DefaultWarmMaxAge)
	}
	c, err = parseFlags([]string{"-warm-max", "5"}, env(map[string]string{
		"BOTTLEQ_WARM": "alpine:3=2,ghcr.io/o/agent:1=1", "BOTTLEQ_WARM_MAX": "9", "BOTTLEQ_WARM_MAX_AGE": "90s",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.warm["alpine:3"] != 2 || c.warm["ghcr.io/o/agent:1"] != 1 || len(c.warm) != 2 || c.warmMax != 5 || c.warmMaxAge != 90*time.Second {
		t.Errorf("config: warm %v, max %d, max age %s", c.warm, c.warmMax, c.warmMaxAge)
	}
	if got := c.warm.String(); got != "alpine:3=2,ghcr.io/o/agent:1=1" {
		t.Errorf("String() = %q", got)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-warm", "alpine:3"}, nil, "-warm"},
		{nil, map[string]string{"BOTTLEQ_WARM": "alpine:3=0"}, "BOTTLEQ_WARM"},
		{[]string{"-warm-max", "-1"}, nil, "-warm-max"},
		{nil, map[string]string{"BOTTLEQ_WARM_MAX": "-2"}, "BOTTLEQ_WARM_MAX"},
		{[]string{"-warm-max-age", "0s"}, nil, "-warm-max-age"},
	} {
		_, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseFlags(%q, %v) = %v, want one line naming %s", tt.args, tt.env, err, tt.want)
		}
	}
}
