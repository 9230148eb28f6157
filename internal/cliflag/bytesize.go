package cliflag

import (
	"fmt"
	"strconv"
	"strings"
)

// ByteSize is a flag of a number of bytes: "1048576", "512KiB", "1MiB",
// "2GiB" (K, M and G alone are binary units too).
type ByteSize int64

// String writes b in the largest binary unit that divides it exactly.
func (b ByteSize) String() string {
	n := int64(b)
	for _, u := range []struct {
		name  string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Set reads a size such as 64MiB; its error quotes the value, never a
// secret, and names no flag.
func (b *ByteSize) Set(s string) error {
	num := strings.TrimRight(s, "BKMGikb ")
	unit := strings.TrimSpace(s[len(num):])
	shift, ok := map[string]uint{"": 0, "B": 0, "K": 10, "KiB": 10, "M": 20, "MiB": 20, "G": 30, "GiB": 30}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n < 0 || n > 1<<(62-shift) {
		return fmt.Errorf("%q is not a size such as 1048576, 512KiB, 64MiB or 1GiB", s)
	}
	*b = ByteSize(n << shift)
	return nil
}
