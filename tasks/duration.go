package tasks

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads a Go duration string ("90s",
// "1h30m") or a JSON number of seconds, and writes the string form.
type Duration time.Duration

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
		*d = 0
	case string:
		x, err := time.ParseDuration(v)
		if err != nil {
			return &durationError{fmt.Sprintf("%q is not a Go duration such as \"90s\"", v)}
		}
		*d = Duration(x)
	case float64:
		if v > float64(MaxTimeout/time.Second)*2 || v < -1 {
			return &durationError{fmt.Sprintf("%g seconds is out of range", v)}
		}
		*d = Duration(v * float64(time.Second))
	default:
		return &durationError{"must be a string such as \"90s\" or a number of seconds"}
	}
	return nil
}

// durationError is a Duration that does not parse; Decode reports it under
// the field that holds it.
type durationError struct{ reason string }

func (e *durationError) Error() string { return e.reason }
