"""Real remote stores for the tests: an HTTP file server that honours ``Range`` (Python's ``http.server``
does not, and GDAL's /vsicurl/ needs it) and moto's S3-compatible server as a separate process.

The HTTP server also answers the ways a remote scene goes wrong: ``/redirect-away/NAME`` sends the client
to another host, ``/redirect-here/NAME`` to the same host, ``/forbidden/NAME`` is a 403, ``/no-range/NAME``
ignores ``Range`` and sends the whole file. Every request's path and Range header is logged in
``requests`` so a test can show that only parts of a file were read.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from workers.bench.s3server import S3Server, free_port

__all__ = ["Outage", "RangeServer", "S3Server", "free_port", "range_server"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # the test log stays readable; requests are kept in server.requests

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        mode, _, name = self.path.lstrip("/").partition("/")
        if mode == "redirect-away":
            return self._status(302, {"Location": f"http://localhost:{self.server.server_address[1]}/{name}"})
        if mode == "redirect-here":
            return self._status(302, {"Location": f"/{name}"})
        if mode == "forbidden":
            return self._status(403)
        if mode != "no-range":
            name = self.path.lstrip("/")
        file = (self.server.root / name.split("?")[0]).resolve()
        if not file.is_file() or not file.is_relative_to(self.server.root.resolve()):
            return self._status(404)
        size = file.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.match(self.headers.get("Range", "")) if mode != "no-range" else None
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            if start >= size:
                return self._status(416, {"Content-Range": f"bytes */{size}"})
        self.send_response(206 if match else 200)
        self.send_header("Accept-Ranges", "bytes" if mode != "no-range" else "none")
        self.send_header("Content-Length", str(end - start + 1))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(file, "rb") as fh:
                fh.seek(start)
                try:
                    self.wfile.write(fh.read(end - start + 1))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client that read what it wanted and hung up (a preflight, the no-range case)

    def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def range_server(root: Path) -> Iterator[RangeServer]:
    server = RangeServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Outage:
    """A TCP relay in front of a server (moto's S3) that a test can switch off and on again: while off,
    connections to its port are refused and those open are cut, as when a store's endpoint goes down —
    and, unlike stopping moto itself (in-memory), nothing stored is lost, so "it is back" means it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(1 << 16):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # one side ended: end both (the other pump then stops too)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._open -= {src, dst}
