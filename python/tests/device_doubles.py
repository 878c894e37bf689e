"""Test doubles for the device clients: an HTTP CONNECT proxy and the IoT Edge workload API
(the Edge daemon's unix-socket HTTP API: trust bundle and signatures), each on a thread of
the test process."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import select
import socket
import socketserver
import threading
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple


class ConnectProxy:
    """An HTTP proxy that only tunnels (``CONNECT host:port``), on 127.0.0.1 and an ephemeral
    port. Records every tunnel's target and ``Proxy-Authorization`` header; answers 407 when
    ``require_auth`` is set and the header is not that value."""

    def __init__(self, require_auth: Optional[str] = None) -> None:
        self.tunnels: List[Tuple[str, Optional[str]]] = []
        self.require_auth = require_auth
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            text, _, rest = head.partition(b"\r\n\r\n")
            lines = text.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            auth = headers.get("proxy-authorization")
            self.tunnels.append((target, auth))
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.require_auth is not None and auth != self.require_auth:
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            try:
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                pair = {conn: upstream, upstream: conn}
                while True:
                    readable, _, _ = select.select(list(pair), [], [])
                    for side in readable:
                        data = side.recv(65536)
                        if not data:
                            return
                        pair[side].sendall(data)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeWorkloadApi:
    """The IoT Edge workload API on a unix socket: ``GET /trust-bundle`` answers ``ca``;
    ``POST /modules/{module}/genid/{generation}/sign`` signs with ``keys[module]`` (HMAC-SHA256,
    as the daemon does with the module's primary key), or answers ``sign_status`` when set.
    Records each request as (method, path, query, JSON body)."""

    def __init__(self, path: str, ca: str, keys: Dict[str, str], generation_id: str) -> None:
        self.requests: List[Tuple[str, str, Dict[str, List[str]], Any]] = []
        self.sign_status: Optional[int] = None
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "workload-client"

            def _answer(self, status: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                api.requests.append(("GET", url.path, urllib.parse.parse_qs(url.query), None))
                if url.path == "/trust-bundle":
                    self._answer(200, {"certificate": ca})
                else:
                    self._answer(404, {"message": "not found"})

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                api.requests.append(("POST", url.path, urllib.parse.parse_qs(url.query), body))
                parts = url.path.split("/")
                # /modules/{module}/genid/{generation}/sign
                if len(parts) != 6 or parts[1] != "modules" or parts[3] != "genid" or parts[5] != "sign":
                    self._answer(404, {"message": "not found"})
                    return
                module = urllib.parse.unquote(parts[2])
                if api.sign_status is not None or module not in keys or parts[4] != generation_id:
                    self._answer(api.sign_status or 404, {"message": "cannot sign"})
                    return
                digest = hmac.new(base64.b64decode(keys[module]), base64.b64decode(body["data"]), hashlib.sha256)
                self._answer(200, {"digest": base64.b64encode(digest.digest()).decode()})

        if os.path.exists(path):
            os.unlink(path)
        self._server = _UnixHTTPServer(path, Handler)
        threading.Thread(target=self._server.serve_forever, name="test-workload", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
