"""Byte-level HTTP for the security tests: exact bodies, no redirects followed, and
hand-written WebSocket handshakes (duplicate headers, odd bytes) over a plain socket."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes


def request(
    base: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request on a fresh connection; redirects are returned, not followed."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def session_login(base: str, account: str, password: str) -> str:
    """Log in through the web client's form; returns a ``Cookie`` header value."""
    page = request(base, "GET", "/accounts/login/")
    csrf_cookie = _cookie(page, "csrftoken")
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
    assert match, "no CSRF token in the login form"
    form = urlencode(
        {"username": account, "password": password, "csrfmiddlewaretoken": match.group(1)}
    ).encode()
    done = request(
        base,
        "POST",
        "/accounts/login/",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf_cookie}",
        },
        body=form,
    )
    assert done.status == 302, (done.status, done.body[:300])
    return f"csrftoken={csrf_cookie}; sessionid={_cookie(done, 'sessionid')}"


def _cookie(reply: Reply, name: str) -> str:
    match = re.search(rf"{name}=([^;]+)", reply.headers.get("set-cookie", ""))
    assert match, f"no {name} cookie in {reply.headers}"
    return match.group(1)


def handshake(port: int, path: str, header_lines: list[bytes], timeout: float = 10.0) -> int:
    """Send a WebSocket upgrade request with exactly ``header_lines`` (besides the
    upgrade headers) and return the response's status code; 0 if the server closed the
    connection without a status line."""
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1".encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: 13",
        *header_lines,
    ]
    raw = b"\r\n".join(lines) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while b"\r\n" not in received:
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", received)
    return int(match.group(1)) if match else 0


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Print a one-line summary (seen with ``-s``) and keep the figures in
    ``var/reliability/<name>.json``, where docs can cite them from."""
    from tests.support import ROOT

    out = ROOT / "var" / "reliability"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    shown = ", ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, list))
    print(f"\n{name}: {shown}")
