package main

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/tasks"
)

func TestFormatPayload(t *testing.T) {
	t.Parallel()
	const secret = "sk-secret-format-test"
	content := []byte("file content, not for the UI")
	b64 := base64.StdEncoding.EncodeToString(content)
	valid := `{"image":"alpine:3","command":["sh","-c","echo hi"],"timeout":"90s",` +
		`"env":{"API_KEY":"` + secret + `","B":"<b>"},` +
		`"files":[{"path":"/in/a.txt","content":"` + b64 + `","mode":"0600"},{"path":"/in/empty","content":""},` +
		`{"path":"/in/big","ref":{"key":"inputs/default/ab12","sha256":"00ff","size":5000}}]}`
	const validShown = `image: "alpine:3"
command: ["sh","-c","echo hi"]
timeout: "90s"
env: {"API_KEY":"<redacted>","B":"<redacted>"}
files: [{"path":"/in/a.txt","content":"<28 bytes>","mode":"0600"},{"path":"/in/empty","content":"<0 bytes>"},{"path":"/in/big","ref":{"key":"inputs/default/ab12","sha256":"00ff","size":5000}}]`

	for _, tt := range []struct {
		name     string
		taskType string
		payload  string
		want     string
	}{
		{"agent:run", tasks.TypeAgentRun, valid, validShown},
		{"no type, an agent:run payload", "", valid, validShown},
		{"in the payload's order, whitespace dropped", tasks.TypeAgentRun, "{\"commit\": false,\n \"from\": \"task:t1\",\n \"command\": [ \"true\" ]}",
			"commit: false\nfrom: \"task:t1\"\ncommand: [\"true\"]"},
		{"every shown field", tasks.TypeAgentRun,
			`{"version":1,"image":"a","from":"/p.smolmachine","command":["x"],"workdir":"/w","timeout":90,"commit":true,"allow_hosts":["api.example.com"],"artifacts":["/o/a"]}`,
			"version: 1\nimage: \"a\"\nfrom: \"/p.smolmachine\"\ncommand: [\"x\"]\nworkdir: \"/w\"\ntimeout: 90\ncommit: true\nallow_hosts: [\"api.example.com\"]\nartifacts: [\"/o/a\"]"},
		{"empty object", tasks.TypeAgentRun, `{}`, "{}"},

		// Invalid payloads, as archived: shown as far as they go.
		{"unknown field: its value redacted", tasks.TypeAgentRun, `{"command":["x"],"token":"` + secret + `"}`,
			"command: [\"x\"]\ntoken: \"<redacted>\""},
		{"field name that is not a name", tasks.TypeAgentRun, `{"command":["x"],"` + secret + `":1}`,
			"command: [\"x\"]\n<field name not shown, 21 bytes>: \"<redacted>\""},
		{"wrong types of shown fields are shown", tasks.TypeAgentRun, `{"command":"echo hi","timeout":"soon","commit":"yes"}`,
			"command: \"echo hi\"\ntimeout: \"soon\"\ncommit: \"yes\""},
		{"env value not a string", tasks.TypeAgentRun, `{"command":["x"],"env":{"K":["` + secret + `"],"N":{"a":"` + secret + `"},"Z":null}}`,
			"command: [\"x\"]\nenv: {\"K\":\"<redacted>\",\"N\":\"<redacted>\",\"Z\":\"<redacted>\"}"},
		{"env name holding a value", tasks.TypeAgentRun, `{"command":["x"],"env":{"API_KEY=` + secret + `":"","OK":"` + secret + `"}}`,
			"command: [\"x\"]\nenv: {\"<variable name not shown, 29 bytes>\":\"<redacted>\",\"OK\":\"<redacted>\"}"},
		{"env as a list", tasks.TypeAgentRun, `{"command":["x"],"env":["API_KEY=` + secret + `"]}`, "command: [\"x\"]\nenv: \"<redacted>\""},
		{"env as a string", tasks.TypeAgentRun, `{"env":"` + secret + `","command":["x"]}`, "env: \"<redacted>\"\ncommand: [\"x\"]"},
		{"env null", tasks.TypeAgentRun, `{"command":["x"],"env":null}`, "command: [\"x\"]\nenv: null"},
		{"env twice", tasks.TypeAgentRun, `{"env":{"A":"` + secret + `"},"command":["x"],"env":{"B":"` + secret + `"}}`,
			"env: {\"A\":\"<redacted>\"}\ncommand: [\"x\"]\nenv: {\"B\":\"<redacted>\"}"},
		{"files of every shape", tasks.TypeAgentRun,
			`{"command":["x"],"files":[{"path":"relative","content":"` + b64 + `","owner":"` + secret + `"},{"path":"/a","content":"` + secret + `!"},` +
				`{"path":"/b","content":[1,2]},{"path":"/c","content":null},"` + secret + `",7]}`,
			"command: [\"x\"]\nfiles: [{\"path\":\"relative\",\"content\":\"<28 bytes>\",\"owner\":\"<redacted>\"},{\"path\":\"/a\",\"content\":\"<redacted: not base64>\"}," +
				"{\"path\":\"/b\",\"content\":\"<redacted>\"},{\"path\":\"/c\",\"content\":null},\"<redacted>\",\"<redacted>\"]"},
		{"files as an object", tasks.TypeAgentRun, `{"command":["x"],"files":{"/a":"` + b64 + `"}}`, "command: [\"x\"]\nfiles: \"<redacted>\""},
		{"cut short in env", tasks.TypeAgentRun, `{"image":"a","command":["x"],"env":{"K":"` + secret,
			"image: \"a\"\ncommand: [\"x\"]\n<the rest, 34 B, not shown: not valid JSON>"},
		{"cut short after a field", tasks.TypeAgentRun, `{"image":"a",`, "image: \"a\"\n<the rest, 1 B, not shown: not valid JSON>"},
		{"data after the object", tasks.TypeAgentRun, `{"command":["x"]} {"env":{"K":"` + secret + `"}}`,
			"command: [\"x\"]\n<37 B after the object, not shown>"},
		{"a long shown value is cut", tasks.TypeAgentRun, `{"command":["` + strings.Repeat("y", 2000) + `"]}`,
			"command: [\"" + strings.Repeat("y", maxShownValue-2) + "… <980 B more>"},

		// Not shown at all.
		{"other task type", "email:send", valid, "<payload not shown: 335 B, not an agent:run payload>"},
		{"no type, JSON without a command", "", `{"env":{"K":"` + secret + `"}}`, "<payload not shown: 37 B, not an agent:run payload>"},
		{"not JSON", tasks.TypeAgentRun, secret, "<payload not shown: 21 B, not JSON>"},
		{"binary", tasks.TypeAgentRun, "\xff\x00" + secret, "<payload not shown: 23 B, not JSON>"},
		{"JSON null", tasks.TypeAgentRun, "null", "<payload not shown: 4 B, JSON null, not an object>"},
		{"JSON string", tasks.TypeAgentRun, `"` + secret + `"`, "<payload not shown: 23 B, JSON string, not an object>"},
		{"JSON array", tasks.TypeAgentRun, `[{"env":{"K":"` + secret + `"}}]`, "<payload not shown: 39 B, JSON array, not an object>"},
		{"empty", tasks.TypeAgentRun, " \n", "<empty payload>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := formatPayload(tt.taskType, []byte(tt.payload))
			if got != tt.want {
				t.Errorf("formatPayload(%q, %s)\n got: %s\nwant: %s", tt.taskType, tt.payload, got, tt.want)
			}
			for _, leak := range []string{secret, string(content), b64} {
				if strings.Contains(got, leak) {
					t.Errorf("shows %q: %s", leak, got)
				}
			}
		})
	}
}

// TestPayloadFieldsClassified fails when tasks.AgentRun or tasks.File gains
// a JSON field formatPayload has not been told about: until it is, the
// field's value is shown as "<redacted>", which is safe but useless.
func TestPayloadFieldsClassified(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		typ   reflect.Type
		known func(string) bool
	}{
		{reflect.TypeFor[tasks.AgentRun](), func(name string) bool { return shownFields[name] || name == "env" || name == "files" }},
		{reflect.TypeFor[tasks.File](), func(name string) bool { return name == "path" || name == "mode" || name == "content" || name == "ref" }},
	} {
		for i := range tt.typ.NumField() {
			name, _, _ := strings.Cut(tt.typ.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Errorf("%s.%s has no JSON name", tt.typ, tt.typ.Field(i).Name)
				continue
			}
			if !tt.known(name) {
				t.Errorf("%s field %q: decide whether formatPayload shows it (shownFields) or redacts it", tt.typ, name)
			}
		}
	}
	for name := range shownFields {
		if _, ok := reflect.TypeFor[tasks.AgentRun]().FieldByNameFunc(func(f string) bool {
			sf, _ := reflect.TypeFor[tasks.AgentRun]().FieldByName(f)
			n, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			return n == name
		}); !ok {
			t.Errorf("shownFields has %q, which tasks.AgentRun lacks", name)
		}
	}
}
