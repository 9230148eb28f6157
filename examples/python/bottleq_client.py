#!/usr/bin/env python3
"""A minimal client of bottleq's HTTP API, with Python's standard library only.

    BOTTLEQ_API=http://127.0.0.1:8090 BOTTLEQ_TOKEN=your-token python3 bottleq_client.py

It starts a run that writes a file, follows the run's events (its phases and
the agent's output as it comes, resuming with Last-Event-ID if the stream
drops), downloads the file as an artifact and checks it against the SHA-256
the API sends. Copy the Client class into your
service; main() shows how to use it.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request


class APIError(Exception):
    """An error answer of the API: {"error": {"code", "message", "field"}}."""

    def __init__(self, status, code, message, field=None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field


class Client:
    """bottleq's HTTP API: start, read, follow and cancel runs, fetch artifacts."""

    def __init__(self, base_url, token, timeout=30):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, method, path, body=None, headers=None, timeout=None):
        h = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            try:
                err = json.load(e)["error"]
            except (ValueError, KeyError):
                raise APIError(e.code, "http", e.reason) from None
            raise APIError(e.code, err["code"], err["message"], err.get("field")) from None

    def start(self, payload, idempotency_key=None, queue=None):
        """Starts a run; the same idempotency_key returns the same run."""
        body = dict(payload)
        if queue:
            body["queue"] = queue
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with self._open("POST", "/v1/runs", body, headers) as resp:
            return json.load(resp)

    def run(self, run_id):
        """Reads a run: state, attempts, last_error and the worker's result."""
        with self._open("GET", f"/v1/runs/{run_id}") as resp:
            return json.load(resp)

    def cancel(self, run_id):
        """Cancels a run for good."""
        with self._open("POST", f"/v1/runs/{run_id}/cancel") as resp:
            return json.load(resp)

    def events(self, run_id, last_event_id=None):
        """Yields (event, id, data) from the run's event stream, resuming
        after last_event_id, until the done event: "phase", "stdout" and
        "stderr" (see output_bytes), "truncated", then "done"."""
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                resp = self._open("GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=120)
            except APIError as e:
                if e.status == 503:  # the API is shutting down: reconnect
                    continue
                raise
            if resp.status == 204:  # everything was seen already
                return
            event, eid, data = None, None, []
            with resp:
                for raw in resp:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith(":"):
                        continue
                    if line:
                        field, _, value = line.partition(": ")
                        if field == "event":
                            event = value
                        elif field == "id":
                            eid = value
                        elif field == "data":
                            data.append(value)
                        continue
                    if event is None:
                        continue
                    parsed = json.loads("\n".join(data))
                    yield event, eid, parsed
                    if eid:
                        last_event_id = eid
                    if event in ("done", "error"):
                        return
                    event, eid, data = None, None, []
            # The stream ended before done (the API restarted): resume.

    @staticmethod
    def output_bytes(data):
        """The bytes of a stdout or stderr event: its text, or its exact
        bytes when they are not valid UTF-8 (a chunk may end inside a
        character)."""
        if "data_base64" in data:
            return base64.b64decode(data["data_base64"])
        return data["data"].encode()

    def artifact(self, run_id, n, dest):
        """Downloads artifact n to dest, checked against the API's SHA-256,
        and returns the digest."""
        with self._open("GET", f"/v1/runs/{run_id}/artifacts/{n}") as resp:
            want = resp.headers["X-Checksum-Sha256"]
            digest = hashlib.sha256()
            tmp = dest + ".part"
            with open(tmp, "wb") as f:
                for chunk in iter(lambda: resp.read(65536), b""):
                    digest.update(chunk)
                    f.write(chunk)
        if digest.hexdigest() != want:
            os.remove(tmp)
            raise ValueError(f"artifact {n}: sha256 {digest.hexdigest()}, the API says {want}")
        os.replace(tmp, dest)
        return want


def main():
    client = Client(os.environ.get("BOTTLEQ_API", "http://127.0.0.1:8090"), os.environ["BOTTLEQ_TOKEN"])
    payload = {
        "image": "alpine:3",
        "workdir": "/workspace",
        "files": [{"path": "/workspace/in/name.txt", "content": base64.b64encode(b"python\n").decode()}],
        "command": ["sh", "-c", "mkdir -p out && echo \"hello from $(cat in/name.txt)\" > out/hello.txt && cat out/hello.txt"],
        "artifacts": ["/workspace/out/hello.txt"],
    }
    run = client.start(payload, idempotency_key=os.environ.get("BOTTLEQ_KEY"))
    print(f"run {run['id']}: {run['state']}")
    final = None
    for event, eid, data in client.events(run["id"]):
        if event == "phase":
            print(f"  [{eid}] {data['phase']}", flush=True)
        elif event in ("stdout", "stderr"):  # the agent's output, as it comes
            out = sys.stdout if event == "stdout" else sys.stderr
            out.buffer.write(client.output_bytes(data))
            out.flush()
        elif event == "done":
            final = data
        else:
            print(f"  {event}: {data}", file=sys.stderr)
    if final is None or final["state"] != "completed":
        print(f"run {run['id']} ended {final and final['state']}: {final and final.get('last_error')}", file=sys.stderr)
        return 1
    result = final["result"]
    print(f"exit code {result['exit_code']}, stdout: {result['stdout'].strip()}")
    digest = client.artifact(run["id"], 0, "hello.txt")
    with open("hello.txt") as f:
        print(f"artifact 0: hello.txt, sha256 {digest}: {f.read().strip()}")
    return result["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
