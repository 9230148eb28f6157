package worker

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// namePrefix starts the name of every machine bottleq creates. The name goes
// on with the deployment and '-' (see [VMName]); a reaper deletes only
// machines whose name starts with namePrefix, its own deployment and '-'.
const namePrefix = "bq-"

// DefaultDeployment is the deployment of a [Config] or [Reaper] that names
// none. cmd/worker always names one (see [DeploymentOf]).
const DefaultDeployment = "default"

// maxDeploymentLen is the longest deployment ID [ValidateDeployment] takes:
// with it, the longest VM name stays well under smolvm's 128 bytes.
const maxDeploymentLen = 10

// idHashBytes is how much of a task ID's SHA-256 names its VMs, commits and
// artifacts: 128 bits, so that no one finds two IDs that share them (40 bits
// did not hold: a colliding pair takes seconds to find).
const idHashBytes = 16

// ValidateDeployment checks a deployment ID: 1 to maxDeploymentLen
// lowercase ASCII letters and digits. With no '-' in it, no deployment's
// names start with another deployment's prefix.
func ValidateDeployment(d string) error {
	if d == "" || len(d) > maxDeploymentLen {
		return fmt.Errorf("%q must be 1 to %d lowercase letters and digits", d, maxDeploymentLen)
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') {
			return fmt.Errorf("%q must be 1 to %d lowercase letters and digits", d, maxDeploymentLen)
		}
	}
	return nil
}

// DeploymentOf returns the deployment ID of the workers that share the
// Redis at addr (HOST:PORT), database db: maxDeploymentLen base32 letters
// of a hash of both. Workers of one deployment must give the same addr;
// asynq's list of live workers, which the reaper trusts, is per database.
func DeploymentOf(addr string, db int) string {
	sum := sha256.Sum256([]byte("bottleq deployment\x00" + strings.ToLower(addr) + "/" + strconv.Itoa(db)))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:maxDeploymentLen]
}

// VMName names the machine of one attempt of a task in a deployment:
// namePrefix, the deployment, a readable slug of the task ID, 128 bits of
// the whole ID's hash (two IDs with the same slug differ), and the attempt.
// The result is a valid smolvm name whatever the ID holds, at most 109
// bytes. The deployment must pass [ValidateDeployment].
func VMName(deployment, taskID string, attempt int) string {
	return fmt.Sprintf("%s-a%d", vmStem(deployment, taskID), attempt)
}

// vmPrefix starts the name of every VM of deployment.
func vmPrefix(deployment string) string { return namePrefix + deployment + "-" }

// vmStem is VMName without the attempt: every attempt of a task shares it.
func vmStem(deployment, taskID string) string {
	return vmPrefix(deployment) + slug(taskID, 40) + "-" + idHash(taskID)
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
