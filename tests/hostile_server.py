"""A misbehaving LM server on a raw socket, for the tests of bad replies (issue 15).

Request number k (0-based) is answered by `behaviours[min(k, len - 1)]`: a function that
writes whatever it likes to the socket. `good(text)` answers properly in the wire of the
path asked (OpenAI or Anthropic), with the usage a well-behaved server reports.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

Behaviour = Callable[[socket.socket, str, dict[str, Any]], None]
"""(connection, path, request body) -> writes the answer."""


def send(conn: socket.socket, body: bytes, status: int = 200) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    conn.sendall(head.encode() + body)


def openai_answer(text: str, **usage: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5},
    }


def anthropic_answer(text: str, **usage: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "content": [{"type": "text", "text": text}],
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


def good(text: str) -> Behaviour:
    """A proper answer, in the wire format of the path."""

    def answer(conn: socket.socket, path: str, body: dict[str, Any]) -> None:
        reply = anthropic_answer(text) if path.endswith("/messages") else openai_answer(text)
        send(conn, json.dumps(reply).encode())

    return answer


def raw(body: bytes) -> Behaviour:
    """Exactly these bytes as a 200 answer's body."""
    return lambda conn, path, request: send(conn, body)


def trickle(conn: socket.socket, path: str, body: dict[str, Any]) -> None:
    """Promise a megabyte, then send one byte every 0.2 s until the client hangs up."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
    )
    try:
        while True:
            conn.sendall(b" ")
            time.sleep(0.2)
    except OSError:
        return


class HostileServer:
    """Serves on 127.0.0.1 (port 0) in a thread; `requests` holds the bodies received."""

    def __init__(self, behaviours: Sequence[Behaviour]) -> None:
        self.behaviours = list(behaviours)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline().decode("latin-1")
                headers = {}
                while (header := self.rfile.readline().decode("latin-1").strip()) != "":
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = json.loads(self.rfile.read(int(headers.get("content-length", "0"))))
                with outer._lock:
                    index = len(outer.requests)
                    outer.requests.append(body)
                behaviour = outer.behaviours[min(index, len(outer.behaviours) - 1)]
                behaviour(self.connection, line.split()[1], body)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up on a trickle is the point

        self._server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = self.base + "/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
