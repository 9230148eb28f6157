package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// VMPrefix starts the name of every machine bottleq creates; the reaper
// deletes nothing else.
const VMPrefix = "bq-"

// idHashBytes is how much of a task ID's SHA-256 names its VMs, commits and
// artifacts: 128 bits, so that no one finds two IDs that share them (40 bits
// did not hold: a colliding pair takes seconds to find).
const idHashBytes = 16

// VMName names the machine of one attempt of a task: VMPrefix, a readable
// slug of the task ID, 128 bits of the whole ID's hash (two IDs with the
// same slug differ), and the attempt. The result is a valid smolvm name
// whatever the ID holds.
func VMName(taskID string, attempt int) string {
	return fmt.Sprintf("%s-a%d", vmStem(taskID), attempt)
}

// vmStem is VMName without the attempt: every attempt of a task shares it.
func vmStem(taskID string) string {
	return VMPrefix + slug(taskID, 40) + "-" + idHash(taskID)
}

// fileKey turns a task ID into a file name that cannot escape its folder:
// a slug and 128 bits of the ID's hash.
func fileKey(taskID string) string { return slug(taskID, 60) + "-" + idHash(taskID) }

// idHash is the first idHashBytes of the SHA-256 of s, in hex.
func idHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:idHashBytes])
}

// slug keeps ASCII letters and digits, turns each run of anything else into
// one '-', and trims it to at most n bytes without a '-' at either end.
func slug(s string, n int) string {
	var b strings.Builder
	dash := false
	for i := 0; i < len(s) && b.Len() < n; i++ {
		c := s[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
			b.WriteByte(c)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if out == "" {
		return "t"
	}
	return out
}
