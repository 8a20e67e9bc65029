"""A real HTTP file server on 127.0.0.1 for the fetch tests, with switchable faults.

Faults (all per path): `status` (answer e.g. 404), `fail_times` (that many 500s first),
`drop_after` (send N body bytes then close the connection, once), `extra_length` (announce a
Content-Length that many bytes too long), `ignore_range` (answer 200 to Range requests).
Every request is logged with its Range header, status and body bytes actually sent.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class Request:
    path: str
    range: Optional[str]
    status: int = 0
    sent: int = 0


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    fail_times: dict[str, int] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    extra_length: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    log: list[Request] = field(default_factory=list)

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                req = Request(self.path, self.headers.get("Range"))
                server.log.append(req)
                server._answer(self, req)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, h: BaseHTTPRequestHandler, req: Request) -> None:
        path = req.path
        if path in self.status or path not in self.files:
            req.status = self.status.get(path, 404)
            h.send_error(req.status)
            return
        if self.fail_times.get(path, 0) > 0:
            self.fail_times[path] -= 1
            req.status = 500
            h.send_error(500)
            return
        data, start = self.files[path], 0
        match = re.fullmatch(r"bytes=(\d+)-", req.range or "")
        if match and not self.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                req.status = 416
                h.send_error(416)
                return
        body = data[start:]
        req.status = 206 if start else 200
        h.send_response(req.status)
        h.send_header("Content-Length", str(len(body) + self.extra_length.get(path, 0)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        drop = self.drop_after.pop(path, None)
        if drop is not None:
            body = body[:drop]
            h.close_connection = True
        h.wfile.write(body)
        h.wfile.flush()
        req.sent = len(body)
