package validate

import (
	"errors"
	"fmt"
)

// maxQueueLen is the longest queue name Queue accepts.
const maxQueueLen = 64

// Queue checks a queue name: 1 to 64 characters of A-Z a-z 0-9
// and _ . : -. asynq itself only asks for a character that is not white
// space, but it puts the name in Redis keys between braces
// ("asynq:{NAME}:"), in logs and in the dashboard's URLs; this keeps names
// to what reads, types and quotes well everywhere.
func Queue(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) > maxQueueLen:
		return fmt.Errorf("is %d bytes, more than %d", len(name), maxQueueLen)
	}
	for _, r := range name {
		if r < 0x80 && (isAlpha(byte(r)) || isDigit(byte(r)) || r == '_' || r == '.' || r == ':' || r == '-') {
			continue
		}
		return fmt.Errorf("%q may hold only letters, digits and _ . : - (not %q)", name, string(r))
	}
	return nil
}
