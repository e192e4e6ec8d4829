"""A local stand-in for the Hugging Face Hub HTTP API: the endpoints ``HfApi.create_repo`` and
``HfApi.upload_folder`` call (repo creation, YAML validation, preupload, commit), on 127.0.0.1 only.

Every file is answered ``uploadMode: regular``, so huggingface_hub sends contents inline (base64) in the
NDJSON commit and the fake records them: ``hub.repos[(repo_type, repo_id)][path] = bytes``. The LFS/Xet path
real large files take on huggingface.co is not exercised. Unknown requests get 404 and are kept in
``hub.unknown`` so a test can assert none happened.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """``with FakeHub(token="hf_x") as hub: HfApi(endpoint=hub.url, token="hf_x")...``."""

    def __init__(self, token: str = "hf_fake_write_token") -> None:
        self.token = token
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.commits: list[dict] = []
        self.unknown: list[str] = []
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                hub.requests.append(f"GET {self.path}")
                hub.unknown.append(f"GET {self.path}")
                self._reply(404, {"error": "not faked"})

            def do_POST(self):  # noqa: N802
                path = self.path.split("?")[0]
                hub.requests.append(f"POST {path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return
                parts = path.strip("/").split("/")
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo_type = req.get("type") or "model"
                    repo_id = (
                        f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    )
                    hub.repos.setdefault((repo_type, repo_id), {})
                    self._reply(200, {"url": f"{hub.url}/{repo_type}s/{repo_id}", "name": repo_id})
                elif path == "/api/validate-yaml":
                    self._reply(200, {"errors": [], "warnings": []})
                elif len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
                    repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
                    if (repo_type, repo_id) not in hub.repos:
                        self._reply(404, {"error": "Repository not found"})
                    elif parts[4] == "preupload":
                        files = json.loads(body)["files"]
                        answer = [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                        self._reply(200, {"files": answer, "commitOid": "0" * 40})
                    else:
                        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                        stored = hub.repos[(repo_type, repo_id)]
                        for item in lines:
                            if item["key"] == "file":
                                value = item["value"]
                                assert value["encoding"] == "base64"
                                stored[value["path"]] = base64.b64decode(value["content"])
                        hub.commits.append({"repo": (repo_type, repo_id), "header": lines[0]["value"]})
                        oid = f"{len(hub.commits):040x}"
                        prefix = "" if repo_type == "model" else f"{repo_type}s/"
                        self._reply(
                            200, {"commitUrl": f"{hub.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid}
                        )
                else:
                    hub.unknown.append(f"POST {path}")
                    self._reply(404, {"error": "not faked"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
