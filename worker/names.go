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

// VMName names the machine of one attempt of a task: VMPrefix, a readable
// slug of the task ID, a short hash of the whole ID (so two IDs with the
// same slug differ), and the attempt. The result is a valid smolvm name
// whatever the ID holds.
func VMName(taskID string, attempt int) string {
	return fmt.Sprintf("%s-a%d", vmStem(taskID), attempt)
}

// vmStem is VMName without the attempt: every attempt of a task shares it.
func vmStem(taskID string) string {
	return VMPrefix + slug(taskID, 40) + "-" + shortHash(taskID)
}

// fileKey turns a task ID into a file name that cannot escape its folder.
func fileKey(taskID string) string { return slug(taskID, 60) + "-" + shortHash(taskID) }

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:5])
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
