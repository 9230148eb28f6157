package smolvm

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	valueFlags = map[string]bool{"--name": true, "--from": true, "--allow-cidr": true, "-e": true, "-w": true,
		"--timeout": true, "--image": true, "-o": true, "--from-vm": true, "--cpus": true, "--mem": true,
		"--label": true, "--dns": true}
	boolFlags = map[string]bool{"--net": true, "-f": true, "--stream": true, "--json": true, "--outbound-localhost-only": true}
)

// splitArgv reads argv the way clap would: flags with their values,
// positionals, and what follows "--". It reports a token that starts with
// '-' where clap would take it for an unknown flag, and a flag whose value
// starts with '-' (clap would take that value for a flag).
func splitArgv(argv []string) (values map[string][]string, positionals, trailing []string, bad string) {
	values = map[string][]string{}
	for i := 2; i < len(argv); i++ {
		tok := argv[i]
		switch {
		case tok == "--":
			return values, positionals, argv[i+1:], ""
		case valueFlags[tok]:
			if i+1 >= len(argv) {
				return values, positionals, nil, tok
			}
			// clap reads a value that starts with '-' as the next flag.
			if strings.HasPrefix(argv[i+1], "-") {
				return values, positionals, nil, argv[i+1]
			}
			values[tok] = append(values[tok], argv[i+1])
			i++
		case boolFlags[tok]:
			values[tok] = append(values[tok], "")
		case strings.HasPrefix(tok, "-"):
			return values, positionals, nil, tok
		default:
			positionals = append(positionals, tok)
		}
	}
	return values, positionals, nil, ""
}

// FuzzArgv: whatever the input, a call either refuses it before running
// smolvm, or builds an argv in which no input lands in a flag position and
// every input comes back as the value it was meant to be.
func FuzzArgv(f *testing.F) {
	f.Add("vm1", "/p/a.smolmachine", "KEY", "-v", "/work", "echo", "--name", "alpine:3", "/out", int64(30e9), false,
		"app", "--net", int64(2), int64(2048), "192.0.2.53", false)
	f.Add("-rf", "--from", "A=B", "x", "rel", "", "-e", "-I", "-o", int64(-1), true,
		"-x", "v", int64(-1), int64(1<<33), "::1", true)
	f.Add("a--b", "/x", "_K9", "v\x00", "/w", "sh", "-c", "img", "/o.smolmachine", int64(1), true,
		"a=b", "", int64(256), int64(0), "-1", false)
	f.Add("vm2", "/p/b.smolmachine", "K", "v", "/w", "true", "", "img", "/o", int64(1e9), false,
		"bottleq.io/deployment", "-e", int64(255), int64(8192), "10.0.0.53", true)
	f.Add("vm3", "/p/c.smolmachine", "K", "v", "/w", "true", "", "img", "/o", int64(1e9), false,
		"-x", "v", int64(0), int64(0), "", false)
	f.Fuzz(func(t *testing.T, name, from, key, val, workdir, cmd0, cmd1, image, out string, timeout int64, positional bool,
		labelKey, labelVal string, cpus, mem int64, dns string, localhostOnly bool) {
		v := v193
		if positional {
			v = v101
		}
		ctx := context.Background()
		env := map[string]string{key: val}
		create := CreateOptions{From: from, Env: env, CPUs: int(cpus), MemoryMiB: int(mem), LocalhostOnly: localhostOnly}
		createWant := map[string]string{"--from": from, "-e": key + "=" + val}
		if labelKey != "" {
			create.Labels = map[string]string{labelKey: labelVal}
			createWant["--label"] = labelKey + "=" + labelVal
		}
		if !localhostOnly {
			create.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
		}
		if a, err := netip.ParseAddr(dns); err == nil {
			create.DNS = a
		}
		if create.CPUs > 0 {
			createWant["--cpus"] = strconv.Itoa(create.CPUs)
		}
		if create.MemoryMiB > 0 {
			createWant["--mem"] = strconv.Itoa(create.MemoryMiB)
		}
		if create.DNS.IsValid() {
			createWant["--dns"] = create.DNS.String()
		}
		calls := []struct {
			op  string
			run func(*Client) error
			// want maps a flag to the value it must carry; positionals
			// and trailing are the expected positional and command words.
			want        map[string]string
			positionals []string
			trailing    []string
		}{
			{"create", func(c *Client) error { return c.Create(ctx, name, create) }, createWant, nil, nil},
			{"exec", func(c *Client) error {
				_, err := c.Exec(ctx, name, []string{cmd0, cmd1}, ExecOptions{Env: env, Workdir: workdir, Timeout: time.Duration(timeout)})
				return err
			}, map[string]string{"--name": name, "-e": key + "=" + val}, nil, []string{cmd0, cmd1}},
			{"pack image", func(c *Client) error { _, err := c.PackImage(ctx, image, out); return err },
				map[string]string{"--image": image, "-o": out}, nil, nil},
			{"pack vm", func(c *Client) error { _, err := c.PackFromVM(ctx, name, out); return err },
				map[string]string{"--from-vm": name, "-o": out}, nil, nil},
			{"delete", func(c *Client) error { return c.Delete(ctx, name) }, nil, nil, nil},
			{"cp", func(c *Client) error { return c.CopyOut(ctx, name, workdir, from) }, nil, []string{name + ":" + workdir, from}, nil},
		}
		for _, call := range calls {
			fr := &fakeRun{answers: []proc{ok("")}}
			c := fakeClient(t, v, fr)
			err := call.run(c)
			argvs := fr.argvs()
			if err != nil {
				if len(argvs) != 0 {
					t.Fatalf("%s: refused (%v) after running smolvm %q", call.op, err, argvs)
				}
				continue
			}
			if len(argvs) == 0 {
				t.Fatalf("%s: accepted, but ran no smolvm", call.op)
			}
			argv := argvs[len(argvs)-1]
			values, pos, trailing, bad := splitArgv(argv)
			if bad != "" {
				t.Fatalf("%s: %q is in a flag position in %q", call.op, bad, argv)
			}
			for flag, want := range call.want {
				if want != "" && flag != "-e" && !slices.Contains(values[flag], want) {
					t.Fatalf("%s: %s carries %q, want %q (argv %q)", call.op, flag, values[flag], want, argv)
				}
			}
			if call.op == "create" {
				// An option that is set appears once; one that is not, never.
				for _, flag := range []string{"--cpus", "--mem", "--dns", "--label"} {
					if _, set := call.want[flag]; set != (len(values[flag]) == 1) || len(values[flag]) > 1 {
						t.Fatalf("create: %s appears %d times, want it set = %v (argv %q)", flag, len(values[flag]), set, argv)
					}
				}
				if got := len(values["--outbound-localhost-only"]); got != map[bool]int{false: 0, true: 1}[localhostOnly] {
					t.Fatalf("create: --outbound-localhost-only appears %d times, want it = %v", got, localhostOnly)
				}
			}
			wantPos := call.positionals
			if (call.op == "create" || call.op == "delete") && positional {
				wantPos = []string{name}
			} else if call.op == "create" || call.op == "delete" {
				if !slices.Contains(values["--name"], name) {
					t.Fatalf("%s: --name carries %q, want %q", call.op, values["--name"], name)
				}
			}
			if !slices.Equal(pos, wantPos) {
				t.Fatalf("%s: positionals %q, want %q (argv %q)", call.op, pos, wantPos, argv)
			}
			if !slices.Equal(trailing, call.trailing) {
				t.Fatalf("%s: command %q, want %q", call.op, trailing, call.trailing)
			}
		}
	})
}
