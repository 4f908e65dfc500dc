"""A Web Push service stand-in for the tests, and a browser's side of a subscription.

:class:`PushService` is an HTTP server (a thread of the test process) that does what a
push service does with a push before it accepts it: it checks the VAPID token (RFC
8292: ES256 over the claims, signed with the key the server publishes, ``aud`` the
endpoint's origin, not expired) and keeps the body. :class:`BrowserSubscription` is
the browser's half (RFC 8291): its own P-256 key pair and 16-byte authentication
secret, and the decryption of what was pushed to it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """What ``pushManager.subscribe()`` makes in a browser: keys and an endpoint."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def to_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()``."""
        point = self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        return dict(json.loads(plain))


@dataclass
class Push:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    claims: dict[str, Any]


class PushService:
    """Accepts pushes at ``/push/<name>`` after checking their VAPID token against
    ``vapid_public_key`` (base64url, as ``GET /api/push/vapid-public-key`` gives it).

    ``answers[name]`` is a list of statuses to answer, in turn, for that endpoint
    (201 when it runs out). A push that fails the VAPID check gets 401 and is kept in
    ``rejected``; every accepted one (2xx) is kept in ``pushes``. ``stalls[name]`` pushes
    to that endpoint, the next ones, are never answered (nor accepted): the sender waits
    until it times out, or dies.
    """

    def __init__(self, vapid_public_key: str = "") -> None:
        self.vapid_public_key = vapid_public_key
        self.answers: dict[str, list[int]] = {}
        self.pushes: list[Push] = []
        self.requests: list[str] = []  # every request's path, whatever the answer
        self.rejected: list[str] = []
        self.stalls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._unstall = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                if service._stall(self.path):
                    service._unstall.wait()
                    return  # the connection closes unanswered
                status = service._receive(self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PushService:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._unstall.set()
        self.server.shutdown()
        self.server.server_close()

    def endpoint(self, name: str) -> str:
        return f"{self.origin}/push/{name}"

    def subscription(self, name: str) -> BrowserSubscription:
        return BrowserSubscription(self.endpoint(name))

    def _stall(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        with self._lock:
            if self.stalls.get(name, 0) <= 0:
                return False
            self.stalls[name] -= 1
            self.requests.append(path)
        return True

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.requests.append(path)
        try:
            claims = self._vapid_claims(headers)
        except Exception as exc:
            with self._lock:
                self.rejected.append(f"{path}: {exc!r}")
            return 401
        name = path.rsplit("/", 1)[-1]
        with self._lock:
            queued = self.answers.get(name) or []
            status = queued.pop(0) if queued else 201
            if status < 300:
                self.pushes.append(Push(path, headers, body, claims))
        return status

    def _vapid_claims(self, headers: dict[str, str]) -> dict[str, Any]:
        """RFC 8292: ``Authorization: vapid t=<JWT>, k=<public key>``."""
        scheme, _, params = headers.get("authorization", "").partition(" ")
        assert scheme == "vapid", f"not a VAPID authorization: {scheme!r}"
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        assert fields["k"] == self.vapid_public_key, "signed with another key"
        public = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(fields["k"])
        )
        claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=self.origin)
        assert claims["exp"] > time.time() and claims["sub"], claims
        return dict(claims)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Push]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.pushes) >= count:
                    return list(self.pushes)
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.pushes)} pushes, not {count}; rejected: {self.rejected}")
