package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/bot-bottle/bottleq/internal/validate"
	"github.com/bot-bottle/bottleq/tasks"
)

// redacted stands in for a value formatPayload does not show.
const redacted = "<redacted>"

// shownFields are the agent:run payload fields formatPayload shows as they
// are: none holds a secret by the payload's contract. env and files are
// shown redacted; any other field, known to tasks.AgentRun or not, has its
// value redacted, so that a field added to the payload stays hidden until
// it is put here (TestPayloadFieldsClassified makes that a decision).
var shownFields = map[string]bool{
	"version": true, "image": true, "from": true, "command": true, "workdir": true,
	"timeout": true, "commit": true, "allow_hosts": true, "artifacts": true,
	"tenant": true, "cpus": true, "mem_mib": true,
}

const (
	// maxShownValue caps the JSON of one shown field.
	maxShownValue = 1024
	// maxPayloadLines caps the fields shown; the rest are counted.
	maxPayloadLines = 40
)

// formatPayload renders a task's payload for the UI and its /api without
// secrets, and compactly: one line per top-level field, "name: value", in
// the payload's order, the value as compact JSON. Each env value is shown
// as "<redacted>" (names that are not valid variable names are hidden
// too: "API_KEY=sk-..." is a value typed as a name) and each file's
// content as its size ("<12 bytes>"); fields that are not in shownFields
// have their value redacted. bottleq treats every env value as a secret,
// and file content is bulky and may be one too.
//
// It reads the payload as JSON as far as it can, without validating it,
// so that an archived invalid task still shows what it asked for: wrong
// types, unknown fields and a payload cut short are shown as far as they
// go. A payload that is not a JSON object, and one of another task type,
// is shown only as its size with the reason ("<payload not shown: 12 B,
// not JSON>"), never as is. The lines are not JSON, so asynqmon shows
// them as they are instead of spreading the payload over a line per
// value.
//
// As with formatResult, an empty taskType is taken as "maybe agent:run":
// the payload is shown when it is a JSON object with a command field.
func formatPayload(taskType string, payload []byte) string {
	if len(bytes.TrimSpace(payload)) == 0 {
		return "<empty payload>"
	}
	if taskType != tasks.TypeAgentRun && taskType != "" {
		return notShown(payload, "not an agent:run payload")
	}
	fields, after, err := objectFields(payload)
	if err != nil && fields == nil {
		return notShown(payload, err.Error())
	}
	if taskType == "" && !hasField(fields, "command") {
		return notShown(payload, "not an agent:run payload")
	}
	if len(fields) == 0 && err == nil && after == 0 {
		return "{}"
	}
	var lines []string
	for i, f := range fields {
		if i == maxPayloadLines {
			lines = append(lines, fmt.Sprintf("<%d more fields, not shown>", len(fields)-i))
			break
		}
		lines = append(lines, fieldName(f.name, "field")+": "+fieldValue(f))
	}
	switch {
	case err != nil:
		lines = append(lines, fmt.Sprintf("<the rest, %s, not shown: %v>", formatSize(int64(after)), err))
	case after > 0:
		lines = append(lines, fmt.Sprintf("<%s after the object, not shown>", formatSize(int64(after))))
	}
	return strings.Join(lines, "\n")
}

// fieldValue is the shown JSON of one top-level field.
func fieldValue(f field) string {
	switch {
	case f.name == "env":
		return redactEnv(f.value)
	case f.name == "files":
		return redactFiles(f.value)
	case shownFields[f.name]:
		return clipValue(compact(f.value), maxShownValue)
	}
	return jsonString(redacted)
}

// redactEnv shows an env object's names with every value redacted.
func redactEnv(raw json.RawMessage) string {
	if isNull(raw) {
		return "null"
	}
	fields, _, err := objectFields(raw)
	if err != nil {
		return jsonString(redacted)
	}
	parts := make([]string, 0, len(fields))
	for _, f := range fields {
		parts = append(parts, jsonString(fieldName(f.name, "variable"))+":"+jsonString(redacted))
	}
	return clipValue("{"+strings.Join(parts, ",")+"}", maxShownValue)
}

// redactFiles shows a files array with each content replaced by its size;
// path and mode are shown, anything else in a file is redacted.
func redactFiles(raw json.RawMessage) string {
	if isNull(raw) {
		return "null"
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return jsonString(redacted)
	}
	parts := make([]string, 0, len(elems))
	for _, e := range elems {
		fields, _, err := objectFields(e)
		if err != nil {
			parts = append(parts, jsonString(redacted))
			continue
		}
		var kv []string
		for _, f := range fields {
			v := jsonString(redacted)
			switch f.name {
			case "path", "mode", "ref": // a ref names a store object and its digest
				v = compact(f.value)
			case "content":
				v = contentSize(f.value)
			}
			kv = append(kv, jsonString(fieldName(f.name, "field"))+":"+v)
		}
		parts = append(parts, "{"+strings.Join(kv, ",")+"}")
	}
	return clipValue("["+strings.Join(parts, ",")+"]", maxShownValue)
}

// contentSize replaces a file's base64 content with its size in bytes.
func contentSize(raw json.RawMessage) string {
	if isNull(raw) {
		return "null"
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return jsonString(redacted)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return jsonString("<redacted: not base64>")
	}
	return jsonString(fmt.Sprintf("<%d bytes>", len(b)))
}

// field is one member of a JSON object.
type field struct {
	name  string
	value json.RawMessage
}

// objectFields reads data as one JSON object and returns its members in
// order, duplicates included. after counts the bytes left after the
// object (whitespace aside). When the object breaks off, it returns the
// members read so far, after counts the bytes not read, and err says why.
func objectFields(data []byte) (fields []field, after int, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, 0, errors.New("not JSON")
	}
	if tok != json.Delim('{') {
		return nil, 0, fmt.Errorf("JSON %s, not an object", kindOf(tok))
	}
	fields = []field{}
	good := dec.InputOffset()
	for dec.More() {
		var f field
		tok, err := dec.Token()
		name, ok := tok.(string)
		if err == nil && ok {
			err = dec.Decode(&f.value)
		}
		if err != nil || !ok {
			return fields, len(data) - int(good), errors.New("not valid JSON")
		}
		f.name = name
		fields = append(fields, f)
		good = dec.InputOffset()
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fields, len(data) - int(good), errors.New("not valid JSON")
	}
	rest := bytes.TrimSpace(data[dec.InputOffset():])
	return fields, len(rest), nil
}

// notShown is what formatPayload shows for a payload it cannot show.
func notShown(payload []byte, why string) string {
	return fmt.Sprintf("<payload not shown: %s, %s>", formatSize(int64(len(payload))), why)
}

func hasField(fields []field, name string) bool {
	for _, f := range fields {
		if f.name == name {
			return true
		}
	}
	return false
}

// fieldName is name when it is a plain identifier, else a placeholder: a
// name may itself be a secret typed in the wrong place.
func fieldName(name, what string) string {
	if validate.EnvKey(name) == nil && len(name) <= 64 {
		return name
	}
	return fmt.Sprintf("<%s name not shown, %d bytes>", what, len(name))
}

func kindOf(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "array"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	}
	return "null"
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// compact is raw without insignificant whitespace.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return jsonString(redacted)
	}
	return b.String()
}

// jsonString is s as a JSON string, with <, > and & as they are.
func jsonString(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return `""`
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// clipValue cuts s to n bytes (on a rune boundary), saying how much was
// left out.
func clipValue(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… <%s more>", formatSize(int64(len(s)-cut)))
}
