package validate_test

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/validate"
)

func TestQueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want string // "" when valid, else the whole reason
	}{
		{"default", ""},
		{"critical", ""},
		{"team-a.gpu:2_x", ""},
		{strings.Repeat("q", 64), ""},
		{"", "must not be empty"},
		{strings.Repeat("q", 65), "is 65 bytes, more than 64"},
		{" ", `" " may hold only letters, digits and _ . : - (not " ")`},
		{"a b", `"a b" may hold only letters, digits and _ . : - (not " ")`},
		{"q{1}", `"q{1}" may hold only letters, digits and _ . : - (not "{")`},
		{"q\n", `"q\n" may hold only letters, digits and _ . : - (not "\n")`},
		{"é", `"é" may hold only letters, digits and _ . : - (not "é")`},
		{"a/b", `"a/b" may hold only letters, digits and _ . : - (not "/")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := reason(validate.Queue(tt.name)); got != tt.want {
				t.Errorf("Queue(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}
