"""Fuzzing the HTTP API from its own OpenAPI document, on a real daphne process.

Schemathesis reads ``/api/openapi.json`` and sends every operation generated requests,
valid and invalid (examples, coverage of each schema's edges, random fuzzing, and
stateful sequences that follow the links it infers), as a signed-in user who shares a
conversation (with messages and an attachment) with another. Every response must be
no 5xx, have a documented status and content type, and match its documented schema;
the server's log must show no traceback.

    FUZZ_HTTP_EXAMPLES=200 .venv/bin/pytest tests/reliability/test_fuzz_http.py -s   # or make fuzz
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, LiveServer, http_json, signup

EXAMPLES = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "8"))
# The coverage phase (every schema's edges, ~500 cases whatever EXAMPLES is) takes
# longer than the short run may: it runs in the long one (make fuzz).
PHASES = os.environ.get("FUZZ_HTTP_PHASES", "examples,fuzzing,stateful")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
LOG_PROBLEMS = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(out, "PNG")
    return out.getvalue()


def upload(base: str, token: str, data: bytes, name: str = "a.png") -> tuple[int, Any]:
    import requests

    response = requests.post(
        f"{base}/api/attachments",
        files={"file": (name, data, "application/octet-stream")},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    return response.status_code, response.json()


def conversation(base: str) -> dict[str, Any]:
    """Two users who wrote to each other, one message with a photo: ids that exist."""
    alice, bob = signup(base), signup(base)
    status, attachment = upload(base, alice["token"], png())
    assert status == 201, attachment
    sends = [(bob, alice, {}), (alice, bob, {"attachment_ids": [attachment["id"]]})]
    sends += [(alice, bob, {}), (bob, alice, {})]
    for sender, to, extra in sends:
        body = {"client_id": str(uuid.uuid4()), "message": "hello", **extra}
        status, sent = http_json(
            "POST", f"{base}/api/dm/{to['account']}/messages", body, sender["token"]
        )
        assert status == 201, sent
    return {"alice": alice, "bob": bob, "attachment_ids": [attachment["id"]]}


def run_schemathesis(server: LiveServer, world: dict[str, Any], report: Path) -> str:
    alice, bob = world["alice"], world["bob"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.reliability.schemathesis_hooks",
        "FUZZ_HTTP_ACCOUNTS": f"{bob['account']},{bob['account'].upper()},{alice['account']}",
        "FUZZ_HTTP_ATTACHMENT_IDS": ",".join(map(str, world["attachment_ids"])),
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{server.http}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {alice['token']}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "2",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--phases",
        PHASES,
        "--request-timeout",
        "30",
    ]
    if "FUZZ_HTTP_EXAMPLES" not in os.environ:
        command += ["--seed", "8"]  # the short run is the same every time
    # Run elsewhere than the checkout: schemathesis keeps a .schemathesis/ cache there.
    done = subprocess.run(command, cwd=report.parent, env=env, capture_output=True, text=True)
    return done.stdout + done.stderr


def figures(report: dict[str, Any], seconds: float, problems: list[str]) -> str:
    cases, operations = report["test_cases"], report["operations"]
    failures = ", ".join(f"{f['code']} {f['title']}: {f['count']}" for f in report["failures"])
    return "\n".join(
        [
            f"HTTP fuzzing: {cases['generated']} test cases in {seconds:.0f} s "
            f"(schemathesis {report['schemathesis_version']}, seed {report['seed']}, "
            f"{EXAMPLES} examples per operation, phases {PHASES})",
            f"  operations: {operations['tested']} tested of {operations['total']}, "
            f"{operations['errored']} errored",
            "  phases: " + ", ".join(f"{k} {v['status']}" for k, v in report["phases"].items()),
            f"  failing cases: {cases['with_failures']} ({failures or 'none'}); "
            f"errors: {len(report['errors'])}",
            f"  server log lines with a traceback or ERROR: {len(problems)}",
        ]
    )


@pytest.mark.live
def test_every_operation_answers_as_documented(asgi_server: LiveServer, tmp_path: Path) -> None:
    world = conversation(asgi_server.http)
    started = time.monotonic()
    output = run_schemathesis(asgi_server, world, tmp_path / "report.json")
    seconds = time.monotonic() - started
    assert asgi_server.log_path is not None
    log = asgi_server.log_path.read_text(errors="replace")
    problems = [line for line in log.splitlines() if LOG_PROBLEMS.search(line)]
    report = json.loads((tmp_path / "report.json").read_text())
    print("\n" + figures(report, seconds, problems))
    assert report["operations"]["tested"] == report["operations"]["total"] > 0, output
    assert report["failures"] == [] and report["errors"] == [], output[-20000:]
    assert report["exit_code"] == 0, output[-20000:]
    assert problems == [], "\n".join(problems[:20])


# --- Regressions: what the fuzzer found ------------------------------------------------


@pytest.mark.live
def test_a_multipart_body_daphne_cannot_parse_gets_the_json_error(asgi_server: LiveServer) -> None:
    """Twisted parsed multipart bodies itself and answered a bare 400 with no body."""
    import requests

    alice = signup(asgi_server.http)
    response = requests.post(
        f"{asgi_server.http}/api/attachments",
        data=b"--b0undary--\r\n",
        headers={
            "Authorization": f"Bearer {alice['token']}",
            "Content-Type": "multipart/form-data; boundary=b0undary",
        },
        timeout=15,
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "invalid"


def peak_memory_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.live
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_an_upload_is_parsed_once(asgi_server: LiveServer) -> None:
    """Twisted decoded every multipart body a second time, into copies daphne never
    read: a 24 MB upload raised the server's peak memory by about 325 MB
    (instamg/daphne_bodies.py). Django's parse alone streams it to a file."""
    import requests

    alice = signup(asgi_server.http)
    before = peak_memory_kib(asgi_server.pid)
    size = 24 * 1024 * 1024
    response = requests.post(
        f"{asgi_server.http}/api/attachments",
        files={"file": ("a.bin", os.urandom(size), "application/octet-stream")},
        headers={"Authorization": f"Bearer {alice['token']}"},
        timeout=60,
    )
    assert response.status_code == 415, response.text  # not a media file: refused after
    grown_mib = (peak_memory_kib(asgi_server.pid) - before) / 1024
    print(f"\npeak memory grew {grown_mib:.0f} MiB for a {size >> 20} MiB upload")
    assert grown_mib < 2 * (size >> 20), f"{grown_mib:.0f} MiB: the body was parsed twice"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/auth/token", {"account": "\x00bob", "password": "x"}, 401),
        (
            "post",
            "/api/auth/signup",
            {"account": "nul", "password": "long pass phrase", "name": "a\x00"},
            400,
        ),
        ("get", "/api/users/?q=%00", None, 200),
        ("get", "/api/dm/%00bob/messages", None, 404),
        ("post", "/api/dm/bob%00/read", {"seq": 1}, 404),
    ],
)
def test_nul_in_a_field_or_path_is_a_client_error(
    alice: Any, bob: Any, auth_client: Any, method: str, path: str, body: Any, status: int
) -> None:
    """PostgreSQL refuses NUL in a text parameter: each of these was a 500 there."""
    client = auth_client(alice)
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body else {}
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.content
    if status >= 400:
        assert response.json()["error"]["code"] in {"invalid", "unauthenticated", "not_found"}
    else:
        assert response.json() == {"results": []}
