"""Stand-ins of FCM (HTTP v1) and APNs (HTTP/2) for the tests, behind the HTTPS proxy the
pushes go through.

Neither firebase-admin nor django-push-notifications' APNs sender lets the service's
address be set (both are fixed: fcm.googleapis.com, api[.development].push.apple.com), so
the stand-in is where a real deployment may also put something: the egress proxy of
``HTTPS_PROXY``. :class:`MobilePushService` is that proxy (HTTP ``CONNECT``), and past the
tunnel it is the service itself, with a certificate for the service's name signed by a
CA of its own that the test trusts (``REQUESTS_CA_BUNDLE`` for FCM's requests,
``SSL_CERT_FILE`` for APNs' OpenSSL context). It also serves the OAuth token endpoint
that the FCM service account file names (``token_uri``).

What it checks is what the real services check before they accept a push:

- OAuth: a JWT assertion signed (RS256) by the service account's key, for this
  ``token_uri``'s service, asking for a scope that allows messaging; FCM: that token as ``Bearer``, the
  project of the URL, a ``message`` with a ``token`` and string ``data``.
- APNs: HTTP/2 over TLS, ``POST /3/device/<hex token>``, a provider token (ES256 JWT with
  the key id and team id, recent ``iat``), ``apns-topic`` (the bundle id),
  ``apns-push-type``, an ``apns-collapse-id`` of at most 64 bytes, a JSON payload of at
  most 4 KiB with ``aps``.

Answers are queued per device token in ``answers`` (200 when the queue is empty):
FCM 404 is UNREGISTERED, APNs 410 is ``Unregistered``, as the services answer them.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

FCM_HOST = "fcm.googleapis.com"
APNS_HOSTS = ("api.push.apple.com", "api.development.push.apple.com", "api.sandbox.push.apple.com")
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
# Scopes that allow FCM's messages:send (firebase-admin asks for cloud-platform).
MESSAGING_SCOPES = {
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
}
PROJECT = "instamg-test"
APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC = "KEY1234567", "TEAM123456", "com.example.instamg"


@dataclass
class Push:
    platform: str  # "fcm" or "apns"
    token: str
    headers: dict[str, str]
    body: dict[str, Any]


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (the file the test trusts) and the services' certificate signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "push stand-in CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(host) for host in (FCM_HOST, *APNS_HOSTS)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FCM_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "service.pem",
        directory / "service.key",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@functools.cache
def _signing_keys() -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    """The service account's RSA key and the APNs key: made once per test process (an
    RSA key takes a while)."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )


class MobilePushService:
    """The proxy, the OAuth token endpoint, FCM and APNs, in threads of the test process.
    ``pushes`` keeps every accepted push, ``requests`` every push asked for (platform
    and token) whatever the answer, ``rejected`` why a request failed a check."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_file, cert_file, key_file = _certificates(directory)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert_file, key_file)
        self.tls.set_alpn_protocols(["h2", "http/1.1"])
        self.answers: dict[str, list[int]] = {}
        self.pushes: list[Push] = []
        self.requests: list[tuple[str, str]] = []
        self.rejected: list[str] = []
        self.tunnels: list[str] = []
        self.access_tokens: set[str] = set()
        self._lock = threading.Lock()
        self._make_credentials()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.fcm_credentials.write_text(json.dumps(self._service_account()))

    # --- What the app is configured with ---------------------------------------------

    def _make_credentials(self) -> None:
        self.google_key, self.apns_key = _signing_keys()
        self.fcm_credentials = self.directory / "firebase.json"
        self.apns_key_file = self.directory / "AuthKey.p8"
        self.apns_key_file.write_bytes(
            self.apns_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def _service_account(self) -> dict[str, str]:
        pem = self.google_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "stand-in",
            "private_key": pem,
            "client_email": f"firebase-adminsdk@{PROJECT}.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": self.token_uri,
        }

    def settings(self) -> dict[str, Any]:
        """``DIRECT_MESSAGES`` keys for both platforms."""
        return {
            "FCM_CREDENTIALS": str(self.fcm_credentials),
            "APNS_KEY": str(self.apns_key_file),
            "APNS_KEY_ID": APNS_KEY_ID,
            "APNS_TEAM_ID": APNS_TEAM_ID,
            "APNS_TOPIC": APNS_TOPIC,
            "APNS_SANDBOX": True,
        }

    def environ(self) -> dict[str, str]:
        """The environment that sends pushes here: the proxy, and its CA trusted."""
        return {
            "HTTPS_PROXY": f"http://127.0.0.1:{self.port}",
            "NO_PROXY": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "SSL_CERT_FILE": str(self.ca_file),
        }

    def process_environ(self) -> dict[str, str]:
        """:meth:`environ` and the settings as the demo host reads them (a process)."""
        return {
            **self.environ(),
            "DM_FCM_CREDENTIALS": str(self.fcm_credentials),
            "DM_APNS_KEY": str(self.apns_key_file),
            "DM_APNS_KEY_ID": APNS_KEY_ID,
            "DM_APNS_TEAM_ID": APNS_TEAM_ID,
            "DM_APNS_TOPIC": APNS_TOPIC,
            "DM_APNS_SANDBOX": "1",
        }

    def __enter__(self) -> MobilePushService:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Push]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.pushes) >= count:
                    return list(self.pushes)
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.pushes)} pushes, not {count}; rejected: {self.rejected}")

    # --- The bookkeeping of both services --------------------------------------------

    def _answer(self, platform: str, token: str, headers: dict[str, str], body: Any) -> int:
        with self._lock:
            self.requests.append((platform, token))
            queued = self.answers.get(token) or []
            status = queued.pop(0) if queued else 200
            if status == 200:
                self.pushes.append(Push(platform, token, headers, body))
        return status

    def _reject(self, why: str) -> None:
        with self._lock:
            self.rejected.append(why)

    # --- OAuth and FCM (HTTP/1.1) -----------------------------------------------------

    def _oauth_token(self, form: dict[str, list[str]]) -> dict[str, Any]:
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"], form
        claims = jwt.decode(
            form["assertion"][0],
            self.google_key.public_key(),
            algorithms=["RS256"],
            audience=GOOGLE_TOKEN_AUDIENCE,  # what Google expects, whatever token_uri says
        )
        assert claims["iss"] == self._service_account()["client_email"], claims
        assert set(claims["scope"].split()) & MESSAGING_SCOPES, claims
        token = "ya29.stand-in-" + uuid.uuid4().hex
        with self._lock:
            self.access_tokens.add(token)
        return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def _fcm_send(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        expected = f"/v1/projects/{PROJECT}/messages:send"
        if path != expected:
            return 404, _fcm_error(404, "NOT_FOUND", f"no such method {path}")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.access_tokens:
            self._reject(f"fcm: bad credentials {headers.get('authorization')!r}")
            return 401, _fcm_error(401, "UNAUTHENTICATED", "invalid authentication credentials")
        body = json.loads(raw)
        message = body.get("message") or {}
        device = message.get("token")
        data = message.get("data") or {}
        if not device or not all(isinstance(v, str) for v in data.values()):
            self._reject(f"fcm: invalid message {body}")
            return 400, _fcm_error(400, "INVALID_ARGUMENT", "invalid message", "INVALID_ARGUMENT")
        status = self._answer("fcm", device, headers, body)
        if status == 200:
            return 200, {"name": f"projects/{PROJECT}/messages/0:{uuid.uuid4().hex}"}
        errors = {
            404: ("NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
            429: ("RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED"),
            400: ("INVALID_ARGUMENT", "Invalid registration token", "INVALID_ARGUMENT"),
            503: ("UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
            500: ("INTERNAL", "Internal error.", "INTERNAL"),
        }
        reason, text, code = errors[status]
        return status, _fcm_error(status, reason, text, code)

    # --- APNs (HTTP/2) ------------------------------------------------------------------

    def _apns_check(self, headers: dict[str, str], raw: bytes) -> tuple[int, str | None]:
        """What APNs checks, in its order: (400/403/405/413 and a reason) or (0, None)."""
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed"
        path = headers.get(":path", "")
        token = path.removeprefix("/3/device/")
        if not path.startswith("/3/device/") or not token or not _is_hex(token):
            return 400, "BadDeviceToken"
        scheme, _, provider = headers.get("authorization", "").partition(" ")
        try:
            assert scheme == "bearer", scheme
            header = jwt.get_unverified_header(provider)
            assert header.get("kid") == APNS_KEY_ID, header
            claims = jwt.decode(provider, self.apns_key.public_key(), algorithms=["ES256"])
            assert claims["iss"] == APNS_TEAM_ID and abs(claims["iat"] - time.time()) < 3600
        except Exception as exc:
            self._reject(f"apns: provider token {exc!r}")
            return 403, "InvalidProviderToken"
        if headers.get("apns-topic") != APNS_TOPIC:
            return 400, "BadTopic" if headers.get("apns-topic") else "MissingTopic"
        if headers.get("apns-push-type") not in ("alert", "background"):
            return 400, "InvalidPushType"
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId"
        if len(raw) > 4096:
            return 413, "PayloadTooLarge"
        try:
            assert isinstance(json.loads(raw)["aps"], dict)
        except Exception:
            return 400, "BadPayload"
        return 0, None

    def _apns_stream(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        status, reason = self._apns_check(headers, raw)
        if reason is None:
            token = headers[":path"].removeprefix("/3/device/")
            status = self._answer("apns", token, headers, json.loads(raw))
            reason = {410: "Unregistered", 400: "BadDeviceToken", 429: "TooManyRequests"}.get(
                status, "ServiceUnavailable" if status >= 500 else None
            )
        else:
            self._reject(f"apns: {status} {reason} {headers}")
        if status == 200:
            return 200, b""
        body: dict[str, Any] = {"reason": reason}
        if status == 410:
            body["timestamp"] = int(time.time() * 1000)
        return status, json.dumps(body).encode()

    def _serve_h2(self, sock: ssl.SSLSocket) -> None:
        import h2.config
        import h2.connection
        import h2.events

        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        while True:
            try:
                data = sock.recv(65536)
            except (OSError, ssl.SSLError):
                return
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers = {_text(k): _text(v) for k, v in event.headers}
                    streams[event.stream_id] = (headers, bytearray())
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id][1].extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    headers, raw = streams.pop(event.stream_id)
                    status, body = self._apns_stream(headers, bytes(raw))
                    out = [(":status", str(status)), ("apns-id", headers.get("apns-id", ""))]
                    conn.send_headers(event.stream_id, out, end_stream=not body)
                    if body:
                        conn.send_data(event.stream_id, body, end_stream=True)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            sock.sendall(conn.data_to_send())

    # --- The proxy ----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Fcm(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body = service._fcm_send(self.path, headers, raw)
                _reply(self, status, body)

            def log_message(self, *args: Any) -> None:
                pass

        class Proxy(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # the OAuth token endpoint (plain HTTP, no proxy)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/token":
                    _reply(self, 404, {"error": "not_found"})
                    return
                try:
                    body = service._oauth_token(parse_qs(raw.decode()))
                except Exception as exc:
                    service._reject(f"oauth: {exc!r}")
                    _reply(self, 400, {"error": "invalid_grant", "error_description": str(exc)})
                    return
                _reply(self, 200, body)

            def do_CONNECT(self) -> None:
                host, _, port = self.path.rpartition(":")
                with service._lock:
                    service.tunnels.append(host)
                if port != "443" or host not in (FCM_HOST, *APNS_HOSTS):
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True
                try:
                    tls = service.tls.wrap_socket(self.connection, server_side=True)
                except (OSError, ssl.SSLError) as exc:
                    service._reject(f"tls with {host}: {exc!r}")
                    return
                try:
                    if host == FCM_HOST:
                        Fcm(tls, self.client_address, self.server)
                    else:
                        service._serve_h2(tls)
                finally:
                    tls.close()

            def log_message(self, *args: Any) -> None:
                pass

        return Proxy


def _reply(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=UTF-8")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _fcm_error(code: int, status: str, message: str, error_code: str = "") -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if error_code:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": error_code,
            }
        ]
    return {"error": error}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _is_hex(token: str) -> bool:
    try:
        bytes.fromhex(token)
    except ValueError:
        return False
    return True


def apns_token() -> str:
    """A device token as iOS gives one: 32 bytes, in hex."""
    return uuid.uuid4().hex + uuid.uuid4().hex


def fcm_token() -> str:
    """A registration token of FCM's shape."""
    raw = base64.urlsafe_b64encode(uuid.uuid4().bytes * 8).decode().rstrip("=")
    return f"{raw[:22]}:APA91b{raw[22:]}"
