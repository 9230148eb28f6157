package cliflag

import "testing"

func TestByteSize(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want int64
		out  string
		bad  bool
	}{
		{in: "1048576", want: 1 << 20, out: "1MiB"},
		{in: "512KiB", want: 512 << 10, out: "512KiB"},
		{in: "2G", want: 2 << 30, out: "2GiB"},
		{in: "1000", want: 1000, out: "1000"},
		{in: "lots", bad: true},
		{in: "-1", bad: true},
		{in: "1TiB", bad: true},
	} {
		var b ByteSize
		err := b.Set(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && (int64(b) != tt.want || b.String() != tt.out)) {
			t.Errorf("Set(%q) = %d %q, %v", tt.in, int64(b), b.String(), err)
		}
	}
}
