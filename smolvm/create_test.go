package smolvm

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestCreateArgv pins `machine create` to the letter in each dialect and at
// each release where an option starts to be honoured (docs/smolvm.md,
// machine create): resources, the allow-list, --outbound-localhost-only,
// --dns and --label, in their one fixed order.
func TestCreateArgv(t *testing.T) {
	t.Parallel()
	const pack = "/p/a.smolmachine"
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}
	dns := netip.MustParseAddr("192.0.2.53")
	labels := map[string]string{"bottleq.io/deployment": "prod-1", "app": "a=b"}
	env := map[string]string{"HTTPS_PROXY": "http://10.0.0.2:8888"}
	tests := []struct {
		name string
		v    Version
		o    CreateOptions
		want []string
	}{
		{"0.8.0 resources", v080, CreateOptions{From: pack, CPUs: 2, MemoryMiB: 2048},
			[]string{"machine", "create", "--from", pack, "--cpus", "2", "--mem", "2048", "vm1"}},
		{"0.8.0 resources and allow-list", v080, CreateOptions{From: pack, CPUs: 1, MemoryMiB: 512, AllowCIDRs: proxy, Env: env},
			[]string{"machine", "create", "--from", pack, "--cpus", "1", "--mem", "512", "--net", "--allow-cidr", "10.0.0.2/32", "-e", "HTTPS_PROXY=http://10.0.0.2:8888", "vm1"}},
		{"1.0.1 limits", v101, CreateOptions{CPUs: MaxCPUs, MemoryMiB: MaxMemoryMiB},
			[]string{"machine", "create", "--cpus", "255", "--mem", "4294967295", "vm1"}},
		{"1.0.2 resources named", v102, CreateOptions{From: pack, CPUs: 2, MemoryMiB: 2048, AllowCIDRs: proxy},
			[]string{"machine", "create", "--name", "vm1", "--from", pack, "--cpus", "2", "--mem", "2048", "--net", "--allow-cidr", "10.0.0.2/32"}},
		{"1.0.2 only memory", v102, CreateOptions{MemoryMiB: 1024},
			[]string{"machine", "create", "--name", "vm1", "--mem", "1024"}},
		{"1.8.0 localhost only", v180, CreateOptions{From: pack, CPUs: 2, MemoryMiB: 2048, LocalhostOnly: true},
			[]string{"machine", "create", "--name", "vm1", "--from", pack, "--cpus", "2", "--mem", "2048", "--outbound-localhost-only"}},
		{"1.8.0 labels sorted", v180, CreateOptions{From: pack, AllowCIDRs: proxy, Labels: labels, Env: env},
			[]string{"machine", "create", "--name", "vm1", "--from", pack, "--net", "--allow-cidr", "10.0.0.2/32",
				"--label", "app=a=b", "--label", "bottleq.io/deployment=prod-1", "-e", "HTTPS_PROXY=http://10.0.0.2:8888"}},
		{"1.9.3 everything", v193, CreateOptions{From: pack, CPUs: 3, MemoryMiB: 3072, AllowCIDRs: proxy, DNS: dns, Labels: labels, Env: env},
			[]string{"machine", "create", "--name", "vm1", "--from", pack, "--cpus", "3", "--mem", "3072", "--net", "--allow-cidr", "10.0.0.2/32",
				"--dns", "192.0.2.53", "--label", "app=a=b", "--label", "bottleq.io/deployment=prod-1", "-e", "HTTPS_PROXY=http://10.0.0.2:8888"}},
		{"1.9.3 localhost only with dns", v193, CreateOptions{From: pack, LocalhostOnly: true, DNS: dns},
			[]string{"machine", "create", "--name", "vm1", "--from", pack, "--outbound-localhost-only", "--dns", "192.0.2.53"}},
		{"1.9.3 smolvm's defaults are still sent", v193, CreateOptions{From: pack, CPUs: DefaultCPUs, MemoryMiB: DefaultMemoryMiB},
			[]string{"machine", "create", "--name", "vm1", "--from", pack, "--cpus", "4", "--mem", "8192"}},
		{"1.9.3 empty labels send nothing", v193, CreateOptions{Labels: map[string]string{}},
			[]string{"machine", "create", "--name", "vm1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("")}}
			if err := fakeClient(t, tt.v, f).Create(context.Background(), "vm1", tt.o); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if got := f.argvs(); len(got) != 1 || !slices.Equal(got[0], tt.want) {
				t.Errorf("argv:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestCreateRefusesBadOptions: every bad value and every combination
// smolvm would misread is an *ArgError naming the option, and smolvm never
// runs. The release is new enough for every option, so what is refused is
// the value.
func TestCreateRefusesBadOptions(t *testing.T) {
	t.Parallel()
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}
	dns := netip.MustParseAddr("192.0.2.53")
	tests := []struct {
		name  string
		o     CreateOptions
		field string
	}{
		{"negative cpus", CreateOptions{CPUs: -1}, "cpus"},
		{"cpus past u8", CreateOptions{CPUs: MaxCPUs + 1}, "cpus"},
		{"negative mem", CreateOptions{MemoryMiB: -8}, "mem"},
		{"mem past u32", CreateOptions{MemoryMiB: MaxMemoryMiB + 1}, "mem"},
		{"localhost only with allow-list", CreateOptions{LocalhostOnly: true, AllowCIDRs: proxy}, "outbound_localhost_only"},
		{"dns without allow-list", CreateOptions{DNS: dns}, "dns"},
		{"dns IPv6", CreateOptions{AllowCIDRs: proxy, DNS: netip.MustParseAddr("2001:db8::53")}, "dns"},
		{"dns IPv4-mapped IPv6", CreateOptions{AllowCIDRs: proxy, DNS: netip.MustParseAddr("::ffff:192.0.2.53")}, "dns"},
		{"empty label key", CreateOptions{Labels: map[string]string{"": "v"}}, "labels"},
		{"label key with =", CreateOptions{Labels: map[string]string{"a=b": "v"}}, "labels"},
		{"flag-like label key", CreateOptions{Labels: map[string]string{"-x": "v"}}, "labels"},
		{"label key with space", CreateOptions{Labels: map[string]string{"a b": "v"}}, "labels"},
		{"label key too long", CreateOptions{Labels: map[string]string{strings.Repeat("k", maxLabelKeyLen+1): "v"}}, "labels"},
		{"label value NUL", CreateOptions{Labels: map[string]string{"k": "a\x00b"}}, "labels"},
		{"flag-like from", CreateOptions{From: "--net"}, "from"},
		{"invalid prefix", CreateOptions{AllowCIDRs: []netip.Prefix{{}}}, "allow_cidr"},
		{"bad env key", CreateOptions{Env: map[string]string{"1A": "x"}}, "env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("")}}
			err := fakeClient(t, v193, f).Create(context.Background(), "vm1", tt.o)
			var ae *ArgError
			if !errors.As(err, &ae) || ae.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want an *ArgError for %q", err, tt.field)
			}
			if errors.Is(err, ErrUnsupported) {
				t.Errorf("%v matches ErrUnsupported", err)
			}
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), tt.field+": ") {
				t.Errorf("error %q is not one line naming %s", err, tt.field)
			}
			if n := len(f.argvs()); n != 0 {
				t.Errorf("ran smolvm %d times, want 0", n)
			}
		})
	}
}

// TestCreateRefusesUnsupported: an option the release would drop or reject
// is an *UnsupportedError naming the option and the feature, matching
// ErrUnsupported and ErrInvalid, and smolvm never runs; one release later
// the same options go through.
func TestCreateRefusesUnsupported(t *testing.T) {
	t.Parallel()
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}
	dns := netip.MustParseAddr("192.0.2.53")
	tests := []struct {
		name    string
		v, next Version
		o       CreateOptions
		field   string
		feature Feature
	}{
		{"labels on 1.7.0", v170, v180, CreateOptions{Labels: map[string]string{"k": "v"}}, "labels", FeatureLabels},
		{"labels on 0.8.0", v080, v180, CreateOptions{Labels: map[string]string{"k": "v"}}, "labels", FeatureLabels},
		{"localhost only --from on 1.7.0", v170, v180, CreateOptions{From: "/p.smolmachine", LocalhostOnly: true}, "outbound_localhost_only", FeatureFromEgress},
		{"localhost only without --from on 1.0.1", v101, v180, CreateOptions{LocalhostOnly: true}, "outbound_localhost_only", FeatureFromEgress},
		{"dns on 1.9.2", v192, v193, CreateOptions{AllowCIDRs: proxy, DNS: dns}, "dns", FeatureDNS},
		{"dns on 1.8.0", v180, v193, CreateOptions{AllowCIDRs: proxy, DNS: dns}, "dns", FeatureDNS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("")}}
			c := fakeClient(t, tt.v, f)
			if c.Supports(tt.feature) {
				t.Fatalf("Supports(%v) on %s = true", tt.feature, tt.v)
			}
			err := c.Create(context.Background(), "vm1", tt.o)
			var ue *UnsupportedError
			if !errors.As(err, &ue) || ue.Field != tt.field || ue.Feature != tt.feature || ue.Version != tt.v {
				t.Fatalf("err = %#v, want *UnsupportedError{%s, %v, %s}", err, tt.field, tt.feature, tt.v)
			}
			if !errors.Is(err, ErrUnsupported) || !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not match ErrUnsupported and ErrInvalid", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.field+": ") || !strings.Contains(msg, tt.v.String()) || !strings.Contains(msg, tt.feature.Since().String()) {
				t.Errorf("error %q does not name the option, the release and the one needed", msg)
			}
			if n := len(f.argvs()); n != 0 {
				t.Errorf("ran smolvm %d times, want 0", n)
			}
			next := &fakeRun{answers: []proc{ok("")}}
			if err := fakeClient(t, tt.next, next).Create(context.Background(), "vm1", tt.o); err != nil || len(next.argvs()) != 1 {
				t.Errorf("on %s: err = %v after %d runs, want it sent", tt.next, err, len(next.argvs()))
			}
		})
	}
}
