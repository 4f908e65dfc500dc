"""Cross-site WebSocket hijacking: no handshake from anywhere but the server's own
origin is accepted, whatever the credentials and however the ``Origin`` is spelled.

Every handshake is written by hand over a socket, so that duplicate headers, folded
lines and odd bytes reach the server exactly as sent. A browser always sends one
``Origin``, serialized as ``scheme://host[:port]`` in lower case; only that exact
string (the page's origin, with a ``Host`` in ALLOWED_HOSTS) may open a socket.

    .venv/bin/pytest tests/reliability/test_origin.py -s    # prints the tally
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.reliability.authz_world import module_server
from tests.reliability.http_raw import handshake, record_figures, session_login
from tests.support import LiveServer, signup

pytestmark = pytest.mark.live

PASSWORD = "correct-horse-battery"


def foreign_origins(port: int) -> list[str]:
    """Origins that are not the server's: other sites, look-alikes, other ports and
    schemes, and strings no browser would send."""
    me = f"127.0.0.1:{port}"
    return [
        "https://evil.example",
        "http://evil.example",
        f"http://evil.example:{port}",
        "null",
        "",
        "http://127.0.0.1.evil.com",
        f"http://127.0.0.1.evil.com:{port}",
        f"http://{me}.evil.com",
        "http://evil127.0.0.1",
        f"http://evil127.0.0.1:{port}",
        f"http://evil.127.0.0.1:{port}",
        f"http://localhost.evil.com:{port}",
        f"http://evillocalhost:{port}",
        # the right host, the wrong port or scheme
        "http://127.0.0.1",
        f"http://127.0.0.1:{port + 1}",
        f"http://127.0.0.1:{port}0",
        f"https://{me}",
        f"ws://{me}",
        f"wss://{me}",
        f"ftp://{me}",
        f"file://{me}",
        f"//{me}",
        me,
        # the same server under another name is another origin for a browser
        f"http://localhost:{port}",
        f"http://[::1]:{port}",
        f"http://127.1:{port}",
        f"http://2130706433:{port}",
        f"http://0x7f000001:{port}",
        # userinfo, paths, queries and trailing junk
        "http://127.0.0.1@evil.com",
        f"http://{me}@evil.com",
        f"http://evil.com@{me}",
        f"http://evil.com#@{me}",
        f"http://evil.com\\@{me}",
        f"http://{me}/",
        f"http://{me}/evil",
        f"http://{me}?evil",
        f"http://{me}#evil",
        f"http://{me}.",
        f"http://127.0.0.1.:{port}",
        f"http://{me}:",
        f"http://{me} evil",
        f"http://{me},https://evil.example",
        f"https://evil.example, http://{me}",
        f"https://evil.example http://{me}",
        # case: browsers serialize origins in lower case
        f"HTTP://{me}",
        f"Http://{me}",
        f"http://LOCALHOST:{port}",
    ]


def smuggled_origin_lines(port: int) -> dict[str, list[bytes]]:
    """Header blocks that try to make a parser see the right origin among others."""
    good = f"http://127.0.0.1:{port}".encode()
    evil = b"https://evil.example"
    return {
        "two Origin headers, evil first": [b"Origin: " + evil, b"Origin: " + good],
        "two Origin headers, good first": [b"Origin: " + good, b"Origin: " + evil],
        "two Origin headers, different case": [b"origin: " + evil, b"ORIGIN: " + good],
        "obs-fold continuation": [b"Origin: " + evil, b" " + good],
        "obs-fold onto the good origin": [b"Origin: " + good, b"\t" + evil],
        "bare LF inside the value": [b"Origin: " + good + b"\nX-Evil: " + evil],
        "bare CR inside the value": [b"Origin: " + good + b"\rX-Evil: 1"],
        "NUL inside the value": [b"Origin: " + good + b"\x00.evil.com"],
        "Latin-1 junk after the value": [b"Origin: " + good + b"\xff"],
        "UTF-8 look-alike dot": [b"Origin: http://127\xe3\x80\x820.0.1:" + str(port).encode()],
    }


def rebinding_cases(port: int) -> dict[str, list[bytes]]:
    """The right origin for the ``Host`` sent, but a ``Host`` this server does not serve
    (DNS rebinding), or a ``Host`` that is not the origin's."""
    return {
        "DNS rebinding: Host and Origin evil.example": [
            f"Host: evil.example:{port}".encode(),
            f"Origin: http://evil.example:{port}".encode(),
        ],
        "Host 127.0.0.1, Origin localhost": [
            f"Host: 127.0.0.1:{port}".encode(),
            f"Origin: http://localhost:{port}".encode(),
        ],
        "two Host headers": [
            b"Host: evil.example",
            f"Host: 127.0.0.1:{port}".encode(),
            f"Origin: http://127.0.0.1:{port}".encode(),
        ],
        "Host with userinfo": [
            f"Host: evil.example@127.0.0.1:{port}".encode(),
            f"Origin: http://evil.example@127.0.0.1:{port}".encode(),
        ],
    }


@pytest.fixture(scope="module")
def origin_server(
    live_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server for the module (the handshakes change nothing)."""
    with module_server(live_database_url, tmp_path_factory.mktemp("origin")) as server:
        yield server


@pytest.fixture(scope="module")
def principal(origin_server: LiveServer) -> dict[str, str]:
    user = signup(origin_server.http, password=PASSWORD)
    peer = signup(origin_server.http, password=PASSWORD)
    user["cookie"] = session_login(origin_server.http, user["account"], PASSWORD)
    user["peer"] = peer["account"]
    return user


def credential_sets(user: dict[str, str]) -> dict[str, list[bytes]]:
    return {
        "none": [],
        "bearer": [f"Authorization: Bearer {user['token']}".encode()],
        "cookie": [f"Cookie: {user['cookie']}".encode()],
    }


def test_no_foreign_origin_opens_a_socket(
    origin_server: LiveServer, principal: dict[str, str]
) -> None:
    """Origins by credentials by both endpoints: no handshake is accepted (101). The
    application refuses with 403; the WebSocket layer (autobahn) answers 400 before it
    to what it cannot parse (a bad port, a duplicate ``Origin``, odd bytes)."""
    port = origin_server.port
    host = f"Host: 127.0.0.1:{port}".encode()
    paths = ["/ws/inbox/", f"/ws/dm/{principal['peer']}/"]
    blocks: dict[str, list[bytes]] = {
        f"Origin: {origin!r}": [host, f"Origin: {origin}".encode("latin-1")]
        for origin in foreign_origins(port)
    }
    blocks.update({name: [host, *lines] for name, lines in smuggled_origin_lines(port).items()})
    blocks.update(rebinding_cases(port))
    tried, accepted = 0, []
    statuses: dict[int, int] = {}
    for name, lines in blocks.items():
        for credential, credential_lines in credential_sets(principal).items():
            for path in paths:
                status = handshake(port, path, [*lines, *credential_lines])
                tried += 1
                statuses[status] = statuses.get(status, 0) + 1
                if status == 101:
                    accepted.append(f"{name} with {credential} on {path}: {status}")
    record_figures(
        "origin_matrix",
        {
            "origins_tried": len(blocks),
            "handshakes": tried,
            "accepted": accepted,
            "accepted_count": len(accepted),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
        },
    )
    assert not accepted, "\n".join(accepted)


def test_cookie_without_origin_is_refused_and_bearer_without_origin_is_not(
    origin_server: LiveServer, principal: dict[str, str]
) -> None:
    """The one exception PROTOCOL.md makes: no ``Origin`` at all (not a browser) is let
    through with a Bearer token, never with only a session cookie."""
    port, host = origin_server.port, f"Host: 127.0.0.1:{origin_server.port}".encode()
    creds = credential_sets(principal)
    for path in ["/ws/inbox/", f"/ws/dm/{principal['peer']}/"]:
        assert handshake(port, path, [host, *creds["cookie"]]) == 403
        assert handshake(port, path, [host]) == 403
        # Bearer plus a cookie is still a Bearer client: the token is what authenticates.
        assert handshake(port, path, [host, *creds["bearer"]]) == 101
        assert handshake(port, path, [host, *creds["bearer"], *creds["cookie"]]) == 101


@pytest.mark.parametrize(
    "host_for",
    [
        lambda port: f"127.0.0.1:{port}",
        lambda port: f"localhost:{port}",
    ],
    ids=["127.0.0.1", "localhost"],
)
def test_the_servers_own_origin_is_accepted(
    origin_server: LiveServer, principal: dict[str, str], host_for: Callable[[int], str]
) -> None:
    """The control: what a browser on the server's own page sends is accepted, with
    every kind of credentials (anonymous is accepted, then closed 4401)."""
    port, host = origin_server.port, host_for(origin_server.port)
    lines = [f"Host: {host}".encode(), f"Origin: http://{host}".encode()]
    for credential_lines in credential_sets(principal).values():
        for path in ["/ws/inbox/", f"/ws/dm/{principal['peer']}/"]:
            assert handshake(port, path, [*lines, *credential_lines]) == 101
