package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// Error codes of an error response, in its "code".
const (
	CodeInvalid          = "invalid"            // 400: the request is wrong; field names what
	CodeUnauthorized     = "unauthorized"       // 401: no token, or an unknown one
	CodeForbidden        = "forbidden"          // 403: the token may not do this; field names why
	CodeNotFound         = "not_found"          // 404: no such run (or another tenant's)
	CodeNoRoute          = "no_route"           // 404: no such endpoint
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeFinished         = "finished"           // 409: the run already ended
	CodeNotReady         = "not_ready"          // 409: the run has no such artifact yet
	CodeTooLarge         = "too_large"          // 413: the body is over the cap
	CodeUnsupportedType  = "unsupported_type"   // 415: the body is not JSON
	CodeKeyReused        = "idempotency_key_reused"
	CodeTooManyRuns      = "too_many_runs" // 429: the tenant's open runs are at the cap
	CodeRateLimited      = "rate_limited"  // 429: the tenant's request rate is over the cap
	CodeUnavailable      = "unavailable"   // 404 for an artifact kept but not readable here, 503 for Redis
	CodeInternal         = "internal"      // 500
)

// Error is an error response: {"error": {"code", "message", "field"}}.
type Error struct {
	// Status is the HTTP status code.
	Status int `json:"-"`
	// Code is one of the Code constants.
	Code string `json:"code"`
	// Message is one line for people; for a bad payload it is the same
	// "field: reason" the enqueue library returns.
	Message string `json:"message"`
	// Field names the request field at fault, as in its JSON
	// ("files[0].path"), or a header ("Idempotency-Key"); empty when none.
	Field string `json:"field,omitempty"`
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

func errorf(status int, code, field, message string) *Error {
	return &Error{Status: status, Code: code, Field: field, Message: message}
}

// invalid is a 400 for field.
func invalid(field, message string) *Error {
	return errorf(http.StatusBadRequest, CodeInvalid, field, message)
}

// asError turns any error into an *Error: a *tasks.ValidationError is a
// 400 naming its field, an *Error stays itself, anything else is a 500
// whose message says nothing of its cause.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		return invalid(ve.Field, ve.Error())
	}
	return errorf(http.StatusInternalServerError, CodeInternal, "", "internal error; the API's log says more")
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bottleq"`)
	}
	writeJSON(w, e.Status, struct {
		Error *Error `json:"error"`
	}{e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own types are written: cannot happen
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"response did not encode"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
