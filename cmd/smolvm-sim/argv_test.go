package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	t.Parallel()
	specs := []flagSpec{
		{long: "name", short: 'n', value: "NAME"},
		{long: "env", short: 'e', value: "ENV", multi: true},
		{long: "force", short: 'f'}, {long: "interactive", short: 'i'},
	}
	tests := []struct {
		name     string
		args     []string
		trailing bool
		vals     map[string][]string
		pos      []string
		rest     []string
		wantErr  string
	}{
		{name: "long space", args: []string{"--name", "x"}, vals: map[string][]string{"name": {"x"}}},
		{name: "long equals", args: []string{"--name=x=y"}, vals: map[string][]string{"name": {"x=y"}}},
		{name: "short space", args: []string{"-n", "x"}, vals: map[string][]string{"name": {"x"}}},
		{name: "short attached", args: []string{"-nx"}, vals: map[string][]string{"name": {"x"}}},
		{name: "repeat", args: []string{"-e", "A=1", "--env", "B=2", "--env=C=3"}, vals: map[string][]string{"env": {"A=1", "B=2", "C=3"}}},
		{name: "cluster", args: []string{"-fi"}, vals: map[string][]string{"force": {""}, "interactive": {""}}},
		{name: "dash dash", args: []string{"a", "--", "-f", "b"}, vals: map[string][]string{}, pos: []string{"a"}, rest: []string{"-f", "b"}},
		{name: "trailing", args: []string{"-f", "cmd", "-n", "--", "x"}, trailing: true, vals: map[string][]string{"force": {""}}, pos: []string{"cmd", "-n", "--", "x"}},
		{name: "positional then flag", args: []string{"a", "-f"}, vals: map[string][]string{"force": {""}}, pos: []string{"a"}},
		{name: "duplicate", args: []string{"-n", "a", "-n", "b"}, wantErr: "cannot be used multiple times"},
		{name: "unknown long", args: []string{"--nope"}, wantErr: "unexpected argument '--nope'"},
		{name: "unknown short", args: []string{"-z"}, wantErr: "unexpected argument '-z'"},
		{name: "missing value", args: []string{"--name"}, wantErr: "a value is required"},
		{name: "value looks like flag", args: []string{"--name", "-f"}, wantErr: "a value is required"},
		{name: "bool with value", args: []string{"--force=yes"}, wantErr: "unexpected value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseArgs(tt.args, specs, tt.trailing)
			if tt.wantErr != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.vals, tt.vals) || !reflect.DeepEqual(p.pos, tt.pos) || !reflect.DeepEqual(p.rest, tt.rest) {
				t.Fatalf("got vals=%v pos=%q rest=%q; want vals=%v pos=%q rest=%q", p.vals, p.pos, p.rest, tt.vals, tt.pos, tt.rest)
			}
		})
	}
}
