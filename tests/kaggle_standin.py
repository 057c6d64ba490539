"""A local stand-in for the Kaggle API endpoints `KaggleApi.dataset_download_files` uses (kaggle 2.x / kagglesdk).

Protocol, as read from the installed client:
  1. POST {endpoint}/v1/datasets.DatasetApiService/DownloadDataset   (PROD layout; other envs add /api before /v1)
     JSON body {"ownerSlug": ..., "datasetSlug": ...[, "datasetVersionNumber": n]},
     header Authorization: Basic base64(username:key) (legacy key) or Bearer <token> (access token).
     Success: a redirect to the archive (Kaggle sends 302 to a signed storage URL); requests follows it as a GET.
     Errors: JSON {"code": 4xx, "message": ...} with that HTTP status; the client raises requests.HTTPError.
  2. GET <redirect target>: the zip bytes, Content-Type application/zip, Content-Length checked by the client.
  An access token (KAGGLE_API_TOKEN, ~/.kaggle/access_token) is first checked by the client, unauthenticated:
     POST {endpoint}/v1/security.OAuthService/IntrospectToken, JSON {"token": ...} -> {"active": ..., "username": ...}.
"""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOWNLOAD_PATHS = ("/v1/datasets.DatasetApiService/DownloadDataset",
                  "/api/v1/datasets.DatasetApiService/DownloadDataset")
INTROSPECT_PATHS = ("/v1/security.OAuthService/IntrospectToken", "/api/v1/security.OAuthService/IntrospectToken")


class KaggleStandin:
    """Serve `datasets` ({"owner/slug": zip bytes}) to clients presenting `username`/`key` (or the access `token`
    of `username`); records every request."""

    def __init__(self, datasets: dict[str, bytes], username: str, key: str, port: int = 0, token: str = ""):
        self.datasets, self.requests, self.username, self.token = datasets, [], username, token
        self.accepted = {"Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()} | (
            {f"Bearer {token}"} if token else set())
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> "KaggleStandin":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str) -> None:
                self._send(status, json.dumps({"code": status, "message": message}).encode(), "application/json")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                standin.requests.append(("POST", self.path))
                if self.path in INTROSPECT_PATHS:
                    active = bool(standin.token) and json.loads(body or b"{}").get("token") == standin.token
                    answer = {"active": active, "username": standin.username if active else ""}
                    return self._send(200, json.dumps(answer).encode(), "application/json")
                if self.path not in DOWNLOAD_PATHS:
                    return self._error(404, f"no such endpoint {self.path}")
                if self.headers.get("Authorization") not in standin.accepted:
                    return self._error(401, "Unauthenticated")
                req = json.loads(body or b"{}")
                slug = f"{req.get('ownerSlug')}/{req.get('datasetSlug')}"
                if slug not in standin.datasets:
                    return self._error(404, f"Dataset {slug} not found")
                self._send(302, b"", "text/plain", {"Location": f"/blobs/{slug}.zip"})

            def do_GET(self):
                standin.requests.append(("GET", self.path))
                slug = self.path.removeprefix("/blobs/").removesuffix(".zip")
                if not self.path.startswith("/blobs/") or slug not in standin.datasets:
                    return self._error(404, "no such blob")
                self._send(200, standin.datasets[slug], "application/zip")

        return Handler
