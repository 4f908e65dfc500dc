"""The install contract, proven on a fresh machine: the wheel into a fresh virtualenv,
two ``django-admin startproject`` hosts, a whole exchange through real sockets.

- The wheel is built from a copy of the checkout with ``python -m build`` (an sdist, then
  the wheel from the sdist, as PyPI's users get it) and passes ``twine check``.
- One virtualenv on Python 3.12 gets ``pip install <wheel>`` with no constraints: the
  newest releases the dependency ranges admit (Django 6.x), not requirements.lock.
- Host "stock": ``startproject`` with Django's own ``auth.User`` and exactly the lines of
  docs/install.md (counted and printed), plus what any host has of its own: a session
  login (``django.contrib.auth.urls`` and its template) and Django's static files view for
  ``DEBUG``.
- Host "custom": the same, with a custom user model (``AbstractBaseUser``, the e-mail
  address as ``USERNAME_FIELD``, a separate public ``handle``) and the host's own adapter;
  no response body and no WebSocket frame of the exchange may contain an e-mail address.

Both hosts use SQLite and the in-memory channel layer, in both CI passes. The hosts'
own files are in ``tests/install/hosts/``.
"""

from __future__ import annotations

import asyncio
import difflib
import glob
import http.cookiejar
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, WsClient, free_port, wait_for_port

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

HOSTS = Path(__file__).resolve().parent / "hosts"
PASSWORD = "install-test-pass-7281"
PREFIX = "/chat/"
TIMES: dict[str, float] = {}  # stage -> seconds, printed with the results

# Not copied into the build's source tree: what git ignores, and the caches.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "media",
    "staticfiles",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "node_modules",
)


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; on failure, fail the test with its output."""
    result = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}")
    return result.stdout


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# --- the wheel -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` on a copy of the checkout (the two CI passes run this at once:
    a build writes build/ and *.egg-info into its source tree), then ``twine check``."""
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    dist = tmp / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)])
    built = sorted(dist.iterdir())
    assert sorted(p.suffix for p in built) == [".gz", ".whl"], built  # the sdist and the wheel
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, built)])
    TIMES["build + twine check"] = time.monotonic() - started
    (whl,) = (p for p in built if p.suffix == ".whl")
    return whl


def test_wheel_holds_the_app_only(wheel: Path) -> None:
    version = project_version()
    assert wheel.name == f"django_instamg_dm-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        listing = [f"{zi.file_size:>9}  {zi.filename}" for zi in zf.infolist()]
        metadata = zf.read(f"django_instamg_dm-{version}.dist-info/METADATA").decode()
    print(f"\n{wheel.name}: {len(names)} files\n" + "\n".join(listing))
    dist_info = f"django_instamg_dm-{version}.dist-info/"
    strays = [n for n in names if not n.startswith(("direct_messages/", dist_info))]
    assert not strays, f"not the app's: {strays}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Every template, static file and migration of the checkout is in it.
    app = ROOT / "direct_messages"
    for folder, pattern in (("templates", "**/*"), ("static", "**/*"), ("migrations", "*.py")):
        for path in (app / folder).glob(pattern):
            if path.is_file() and "__pycache__" not in path.parts:
                assert path.relative_to(ROOT).as_posix() in names, f"missing: {path}"
    for required in (
        "direct_messages/templates/direct_messages/direct.html",
        "direct_messages/static/direct_messages/js/app.js",
        "direct_messages/static/direct_messages/css/app.css",
        "direct_messages/static/direct_messages/favicon.svg",
        "direct_messages/migrations/0001_initial.py",
        "direct_messages/management/commands/purge_attachments.py",
        "direct_messages/asgi.py",
        "direct_messages/urls.py",
    ):
        assert required in names, f"missing: {required}"
    top_level = {n.split("/")[0] for n in names if not n.startswith(dist_info)}
    assert top_level == {"direct_messages"}, top_level
    assert "Name: django-instamg-dm" in metadata
    assert "Requires-Python: >=3.11" in metadata


# --- Python 3.12 and the virtualenv ----------------------------------------------------


def python312() -> str:
    """A working Python 3.12: $INSTALL_TEST_PYTHON, pyenv's, or one on PATH.

    The pyenv shim on PATH exists even when no 3.12 is active, so each candidate is run."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [
        os.environ.get("INSTALL_TEST_PYTHON", ""),
        *sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True),
        shutil.which("python3.12") or "",
        "/usr/bin/python3.12",
        "/usr/local/bin/python3.12",
    ]
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 12)":
            return candidate
    pytest.fail(
        "missing on this machine: the install test needs a Python 3.12 with venv, and found "
        f"none: not pyenv's ({pyenv_root}/versions/3.12.*/bin/python3.12), nor python3.12 "
        "on PATH. Install one (pyenv install 3.12; Debian 12 has no python3.12 package) or "
        "set INSTALL_TEST_PYTHON=/path/to/python3.12.",
        pytrace=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for the hosts' commands: nothing of this suite's settings."""
    drop = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "PYTHONPATH", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYENV_")}
    env.update(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv on Python 3.12 with the wheel and the newest releases its ranges admit."""
    python = python312()
    started = time.monotonic()
    path = tmp_path_factory.mktemp("venv312") / "venv"
    run([python, "-m", "venv", str(path)], env=clean_env())
    run([str(path / "bin/python"), "-m", "pip", "install", "-q", str(wheel)], env=clean_env())
    TIMES["venv on 3.12 + pip install wheel"] = time.monotonic() - started
    versions = run(
        [
            str(path / "bin/python"),
            "-c",
            "import sys, importlib.metadata as m; print(sys.version.split()[0], *("
            "f'{d}=={m.version(d)}' for d in ('django-instamg-dm', 'Django', 'channels', "
            "'daphne', 'django-ninja', 'pydantic', 'pillow')))",
        ],
        env=clean_env(),
    ).split()
    print(f"\ninstall-test venv: Python {versions[0]}, {' '.join(versions[1:])}")
    assert f"django-instamg-dm=={project_version()}" in versions
    django_version = next(v for v in versions if v.startswith("Django=="))
    # The newest Django the range admits, not the lock's 5.2: the app runs on 6.x too.
    assert int(django_version.split("==")[1].split(".")[0]) >= 6, django_version
    return path


# --- the hosts -------------------------------------------------------------------------


@dataclass
class Person:
    login: str  # what the host's login form and authenticate() take (USERNAME_FIELD)
    handle: str  # the public handle the app shows and takes in URLs
    name: str  # the display name the adapter gives
    email: str
    create: dict[str, Any]  # create_user(**create)


@dataclass
class Host:
    kind: str
    directory: Path
    port: int
    alice: Person
    bob: Person
    wiring_lines: int  # lines of docs/install.md's contract added to the host
    own_lines: int  # the host's own: session login, static files under DEBUG, user model
    diff: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    seen: list[str] = field(default_factory=list)  # every response body and frame

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def people(kind: str) -> tuple[Person, Person]:
    if kind == "stock":
        return (
            Person(
                "alice",
                "alice",
                "Alice Liddell",
                "alice.liddell@wonderland.example",
                {
                    "username": "alice",
                    "email": "alice.liddell@wonderland.example",
                    "first_name": "Alice",
                    "last_name": "Liddell",
                },
            ),
            Person(
                "bob",
                "bob",
                "Bob Builder",
                "bob.builder@site.example",
                {
                    "username": "bob",
                    "email": "bob.builder@site.example",
                    "first_name": "Bob",
                    "last_name": "Builder",
                },
            ),
        )
    # The handle is unrelated to the e-mail address, so that a leak cannot hide.
    return (
        Person(
            "a.liddell@wonderland.example",
            "rabbit_hole",
            "Alice L.",
            "a.liddell@wonderland.example",
            {
                "email": "a.liddell@wonderland.example",
                "handle": "rabbit_hole",
                "display_name": "Alice L.",
            },
        ),
        Person(
            "b.builder@site.example",
            "can.we.fix.it",
            "Bob B.",
            "b.builder@site.example",
            {
                "email": "b.builder@site.example",
                "handle": "can.we.fix.it",
                "display_name": "Bob B.",
            },
        ),
    )


# docs/install.md's contract, applied as written (the `wiring` lines, counted):
SETTINGS_WIRING = [
    # "daphne" first, as daphne's docs say: its `runserver` must come before staticfiles'
    # one, and daphne's system check (daphne.E001) refuses `INSTALLED_APPS += ["daphne",
    # ...]`, which would fail `check` and `migrate` even for a host that runs `daphne`.
    'INSTALLED_APPS = ["daphne", *INSTALLED_APPS, "channels", "direct_messages"]',
    'CHANNEL_LAYERS = {"default": {"BACKEND": "direct_messages.local_layer.LocalChannelLayer"}}  # one process',
    'ASGI_APPLICATION = "host.asgi.application"',
]
SETTINGS_WIRING_CUSTOM = ['DIRECT_MESSAGES = {"USER_ADAPTER": "accounts.adapters.HandleAdapter"}']
URLS_WIRING = [f'    path("{PREFIX.strip("/")}/", include("direct_messages.urls")),']
ASGI_WIRING = [
    "from channels.routing import ProtocolTypeRouter",
    "from direct_messages.asgi import websocket_application",
    'application = ProtocolTypeRouter({"http": get_asgi_application(), "websocket": websocket_application})',
]
# The host's own, which any project has whether or not it uses the app:
SETTINGS_OWN = ['TEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]  # registration/login.html']
SETTINGS_OWN_CUSTOM = ['INSTALLED_APPS += ["accounts"]', 'AUTH_USER_MODEL = "accounts.User"']
URLS_OWN = ['    path("accounts/", include("django.contrib.auth.urls")),']
# Plain `daphne` does not serve static files (runserver does): Django's own view for
# DEBUG, as Django's docs say for development ("Serving static files during development").
URLS_OWN_STATIC = [
    "from django.contrib.staticfiles.urls import staticfiles_urlpatterns",
    "urlpatterns += staticfiles_urlpatterns()",
]


def wire_host(directory: Path, kind: str) -> tuple[int, int, str]:
    """Apply the contract to a fresh ``startproject`` host; return (wiring lines, the
    host's own lines, the diff)."""
    package = directory / "host"
    before = {
        p: p.read_text()
        for p in (package / "settings.py", package / "urls.py", package / "asgi.py")
    }

    settings = before[package / "settings.py"]
    assert re.search(r"^DEBUG = True$", settings, re.M)  # startproject's: ALLOWED_HOSTS=[] then
    wiring, own = list(SETTINGS_WIRING), list(SETTINGS_OWN)
    if kind == "custom":
        wiring += SETTINGS_WIRING_CUSTOM
        own += SETTINGS_OWN_CUSTOM
    settings += "\n# The direct_messages app (docs/install.md)\n" + "\n".join(wiring) + "\n"
    settings += "\n# The host's own\n" + "\n".join(own) + "\n"
    (package / "settings.py").write_text(settings)

    urls = before[package / "urls.py"]
    urls, n = re.subn(
        r"^from django\.urls import path$",
        "from django.urls import include, path",
        urls,
        flags=re.M,
    )
    assert n == 1, urls
    urls, n = re.subn(
        r"^urlpatterns = \[\n",
        lambda m: m.group(0) + "\n".join(URLS_WIRING + URLS_OWN) + "\n",
        urls,
        flags=re.M,
    )
    assert n == 1, urls
    urls += "\n" + "\n".join(URLS_OWN_STATIC) + "\n"
    (package / "urls.py").write_text(urls)

    asgi = before[package / "asgi.py"]
    asgi, n = re.subn(
        r"^application = get_asgi_application\(\)$",
        lambda m: "\n".join(ASGI_WIRING),
        asgi,
        flags=re.M,
    )
    assert n == 1, asgi
    (package / "asgi.py").write_text(asgi)

    shutil.copytree(HOSTS / "templates", directory / "templates")
    if kind == "custom":
        shutil.copytree(
            HOSTS / "custom" / "accounts",
            directory / "accounts",
            ignore=shutil.ignore_patterns("__pycache__"),
        )

    diff = "".join(
        "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                path.read_text().splitlines(keepends=True),
                f"startproject/{path.relative_to(directory)}",
                f"host/{path.relative_to(directory)}",
            )
        )
        for path, text in before.items()
    )
    # Changed or added code lines; a replaced line counts once (its "+" side).
    added = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+")
        and not line.startswith("+++")
        and line[1:].strip()
        and not line[1:].lstrip().startswith("#")
    ]
    wiring_set = {line.strip() for line in wiring + URLS_WIRING + ASGI_WIRING} | {
        "from django.urls import include, path"
    }
    wiring_count = sum(1 for line in added if line in wiring_set)
    return wiring_count, len(added) - wiring_count, diff


def manage(host_dir: Path, venv: Path, *args: str) -> str:
    return run([str(venv / "bin/python"), "manage.py", *args], cwd=host_dir, env=clean_env())


@pytest.fixture(scope="module", params=["stock", "custom"])
def host(
    request: pytest.FixtureRequest, venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Host]:
    kind: str = request.param
    started = time.monotonic()
    directory = tmp_path_factory.mktemp(f"host-{kind}")
    run([str(venv / "bin/django-admin"), "startproject", "host", str(directory)], env=clean_env())
    wiring, own, diff = wire_host(directory, kind)
    if kind == "custom":
        own_files = sum(
            1
            for path in (directory / "accounts").rglob("*.py")
            for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")
        )
        print(f"\nhost {kind}: its user model and adapter, accounts/: {own_files} lines")
        manage(directory, venv, "makemigrations", "accounts", "-v0")
    print(f"\nhost {kind}: the wiring, as applied to startproject's files\n{diff}")
    check = manage(directory, venv, "check")
    # startproject's SQLite has deferred transactions: the app warns (and says what to
    # set) about concurrent writes; nothing else may be reported.
    issues = re.findall(r"^\?: \(([\w.]+)\)", check, re.M)
    assert issues == ["direct_messages.W001"], check
    # ... and the host does what it says: without it, two sends at once may get "database
    # is locked" (the exchange below has failed so, now and then).
    settings_path = directory / "host" / "settings.py"
    settings_path.write_text(
        settings_path.read_text()
        + 'DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}\n'
    )
    assert not re.findall(r"^\?: \(([\w.]+)\)", manage(directory, venv, "check"), re.M)
    manage(directory, venv, "migrate", "--noinput", "-v0")
    alice, bob = people(kind)
    script = (
        "import json, sys; from django.contrib.auth import get_user_model; "
        "[get_user_model().objects.create_user(password=sys.argv[-1], **kw) "
        "for kw in json.loads(sys.argv[-2])]"
    )
    run(
        [
            str(venv / "bin/python"),
            "-c",
            f"import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'host.settings'; "
            f"django.setup(); {script}",
            json.dumps([alice.create, bob.create]),
            PASSWORD,
        ],
        cwd=directory,
        env=clean_env(),
    )
    TIMES[f"host {kind}: startproject, wire, check, migrate, users"] = time.monotonic() - started

    port = free_port()
    log = directory / "daphne.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin/daphne"), "-b", "127.0.0.1", "-p", str(port), "host.asgi:application"],
            cwd=directory,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout=30, proc=proc)
        except (RuntimeError, TimeoutError):
            pytest.fail(f"daphne did not start:\n{log.read_text(errors='replace')[-4000:]}")
        yield Host(kind, directory, port, alice, bob, wiring, own, diff, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            print(f"--- host {kind}: daphne log ---\n{text[-6000:]}")


# --- a browser-like HTTP client (urllib: cookies, CSRF, no redirects followed) ---------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One user's HTTP side: a cookie jar (the host's session), or a Bearer token."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect
        )
        self.token: str | None = None

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        file: tuple[str, str, bytes] | None = None,
        html: bool = False,
    ) -> Response:
        data, headers = None, {}
        if html:  # as a browser asks for a page
            headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"
        if json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif file is not None:
            boundary = uuid.uuid4().hex
            name, content_type, content = file
            data = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n".encode()
                + content
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif method not in ("GET", "HEAD") and self.cookie("csrftoken"):
            headers["X-CSRFToken"] = self.cookie("csrftoken") or ""
        req = urllib.request.Request(
            self.host.http + path, data=data, method=method, headers=headers
        )
        try:
            with self.opener.open(req, timeout=20) as resp:
                response = Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as exc:
            response = Response(exc.code, exc.headers, exc.read())
        self.host.seen.append(response.body.decode("utf-8", "replace"))
        return response

    async def arequest(self, method: str, path: str, **kwargs: Any) -> Response:
        return await asyncio.to_thread(self.request, method, path, **kwargs)

    def login(self, person: Person) -> None:
        """The host's own session login: django.contrib.auth's form, with its CSRF token."""
        page = self.request("GET", "/accounts/login/", html=True)
        assert page.status == 200, page
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        assert match, page.body[:500]
        inbox = f"{PREFIX}direct/inbox/"
        done = self.request(
            "POST",
            "/accounts/login/",
            form={
                "csrfmiddlewaretoken": match.group(1).decode(),
                "username": person.login,
                "password": PASSWORD,
                "next": inbox,
            },
        )
        assert done.status == 302, (done.status, done.body[:2000])
        assert done.headers["Location"] == inbox, done.headers["Location"]
        assert self.cookie("sessionid"), list(self.jar)


class RecordedSocket:
    """The ``websockets`` connection under a ``WsClient``, keeping every frame it reads."""

    def __init__(self, conn: Any, seen: list[str]) -> None:
        self.conn, self.seen = conn, seen

    async def recv(self) -> Any:
        frame = await self.conn.recv()
        self.seen.append(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))
        return frame

    async def send(self, data: Any) -> None:
        await self.conn.send(data)

    async def close(self) -> None:
        await self.conn.close()


async def open_socket(
    host: Host, path: str, headers: dict[str, str], origin: str | None = None
) -> WsClient:
    from websockets.asyncio.client import connect

    conn = await connect(
        host.ws + path,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        open_timeout=10,
    )
    return WsClient(RecordedSocket(conn, host.seen))


def png(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 5 % 256, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# --- the exchange ------------------------------------------------------------------------


async def live_new(ws: WsClient, text: str) -> dict[str, Any]:
    """The ``message.new`` with ``text``, live on ``ws``."""
    while True:
        frame = await ws.recv_type("message.new", timeout=10)
        if frame["message"]["message"] == text:
            return frame["message"]  # type: ignore[no-any-return]


async def exchange(host: Host) -> None:
    from websockets.exceptions import InvalidStatus

    a, b = host.alice, host.bob
    alice, bob = Client(host), Client(host)

    # Both log in through the host's own session login.
    await asyncio.to_thread(alice.login, a)
    await asyncio.to_thread(bob.login, b)

    # Alice gets a token from the app's endpoint, with her handle and her password.
    wrong = await alice.arequest(
        "POST", f"{PREFIX}api/auth/token", json_body={"account": a.handle, "password": "nope"}
    )
    assert wrong.status == 401 and wrong.json()["error"]["code"] == "unauthenticated", wrong
    issued = await alice.arequest(
        "POST", f"{PREFIX}api/auth/token", json_body={"account": a.handle, "password": PASSWORD}
    )
    assert issued.status == 200, issued
    token = issued.json()
    assert set(token) == {"token", "expires_at"}, token
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", token["expires_at"]), token
    if a.login != a.handle:  # what the host's login takes (the e-mail) works too
        by_login = await alice.arequest(
            "POST", f"{PREFIX}api/auth/token", json_body={"account": a.login, "password": PASSWORD}
        )
        assert by_login.status == 200, by_login
    alice.jar.clear()  # from here on alice is a Bearer client (an app, a script)
    alice.token = token["token"]

    me = await alice.arequest("GET", f"{PREFIX}api/users/me")
    assert me.status == 200, me
    assert me.json()["account"] == a.handle and me.json()["name"] == a.name, me.json()
    me = await bob.arequest("GET", f"{PREFIX}api/users/me")
    assert me.status == 200 and me.json()["account"] == b.handle, me

    # A cookie session needs an allowed Origin on the socket (cross-site WebSocket hijacking).
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(
            host,
            f"{PREFIX}ws/dm/{a.handle}/",
            {"Cookie": bob.cookie_header()},
            origin="http://evil.example",
        )
    assert refused.value.response.status_code == 403

    # Both sockets: alice with her token (no Origin), bob with his session and the page's Origin.
    alice_ws = await open_socket(
        host, f"{PREFIX}ws/dm/{b.handle}/", {"Authorization": f"Bearer {alice.token}"}
    )
    bob_ws = await open_socket(
        host,
        f"{PREFIX}ws/dm/{a.handle.upper()}/",
        {"Cookie": bob.cookie_header()},
        origin=host.http,
    )
    try:
        joined_a, joined_b = await alice_ws.recv(), await bob_ws.recv()
        assert joined_a["type"] == "room.joined" and joined_b["type"] == "room.joined", (
            joined_a,
            joined_b,
        )
        assert joined_a["room"] == joined_b["room"], (joined_a, joined_b)
        assert joined_a["with"]["account"] == b.handle and joined_a["with"]["name"] == b.name, (
            joined_a
        )
        assert joined_b["with"]["account"] == a.handle and joined_b["with"]["name"] == a.name, (
            joined_b
        )

        # 1. alice over WebSocket -> live on bob's socket
        ack = await alice_ws.send_message("hello bob, over the socket")
        assert ack["type"] == "message.ack", ack
        got = await live_new(bob_ws, "hello bob, over the socket")
        assert got["sender"] == a.handle and got["seq"] == 1, got

        # 2. bob over HTTP (session + CSRF) -> live on alice's socket
        sent = await bob.arequest(
            "POST",
            f"{PREFIX}api/dm/{a.handle}/messages",
            json_body={"client_id": str(uuid.uuid4()), "message": "hi alice, over HTTP"},
        )
        assert sent.status == 201, sent
        got = await live_new(alice_ws, "hi alice, over HTTP")
        assert got["sender"] == b.handle and got["id"] == sent.json()["id"], got

        # 3. alice over HTTP (Bearer) -> live on bob's socket
        sent = await alice.arequest(
            "POST",
            f"{PREFIX}api/dm/{b.handle}/messages",
            json_body={"client_id": str(uuid.uuid4()), "message": "and over HTTP too"},
        )
        assert sent.status == 201, sent
        got = await live_new(bob_ws, "and over HTTP too")
        assert got["sender"] == a.handle, got

        # 4. bob over WebSocket -> live on alice's socket
        ack = await bob_ws.send_message("and back over the socket")
        assert ack["type"] == "message.ack", ack
        got = await live_new(alice_ws, "and back over the socket")
        assert got["sender"] == b.handle and got["seq"] == 4, got

        # 5. a photo: bob uploads it (multipart, session + CSRF) and sends it over his
        # socket; alice sees it live and fetches it with her token.
        photo = png()
        upload = await bob.arequest(
            "POST", f"{PREFIX}api/attachments", file=("photo.png", "image/png", photo)
        )
        assert upload.status == 201, upload
        attachment = upload.json()
        assert attachment["kind"] == "image" and attachment["url"].startswith(f"{PREFIX}api/"), (
            attachment
        )
        ack = await bob_ws.send_message("a photo", attachment_ids=[attachment["id"]])
        assert ack["type"] == "message.ack", ack
        got = await live_new(alice_ws, "a photo")
        (shown,) = got["attachments"]
        assert shown["id"] == attachment["id"], got
        assert shown["url"].startswith(f"{PREFIX}api/"), shown
        fetched = await alice.arequest("GET", shown["url"])
        assert fetched.status == 200, fetched
        host.seen.pop()  # the image's bytes, not text
        from PIL import Image

        assert Image.open(io.BytesIO(fetched.body)).size == (64, 48)
        if shown["thumbnail_url"]:
            thumb = await alice.arequest("GET", shown["thumbnail_url"])
            assert thumb.status == 200, thumb
            host.seen.pop()
    finally:
        await alice_ws.close()
        await bob_ws.close()

    # History, the inbox and user search, over HTTP.
    history = await alice.arequest("GET", f"{PREFIX}api/dm/{b.handle}/messages")
    assert history.status == 200, history
    assert [m["seq"] for m in history.json()["results"]] == [1, 2, 3, 4, 5], history.json()
    assert [m["sender"] for m in history.json()["results"]] == [
        a.handle,
        b.handle,
        a.handle,
        b.handle,
        b.handle,
    ]
    for client, peer in ((bob, a), (alice, b)):
        inbox = await client.arequest("GET", f"{PREFIX}api/inbox")
        assert inbox.status == 200, inbox
        (conversation,) = inbox.json()["results"]
        assert conversation["with"]["account"] == peer.handle, conversation
        assert conversation["last_message"]["message"] == "a photo", conversation
    found = await alice.arequest("GET", f"{PREFIX}api/users/?q={b.handle[:2]}")
    assert found.status == 200, found
    assert [u["account"] for u in found.json()["results"]] == [b.handle], found.json()

    # The web client: GET <prefix> is the inbox (or sends there), the page and every
    # static file it loads (the ES modules it imports too) answer 200.
    anonymous = Client(host)
    page = await anonymous.arequest("GET", f"{PREFIX}direct/inbox/", html=True)
    assert page.status == 302 and page.headers["Location"].startswith("/accounts/login/"), (
        page.status,
        page.headers,
    )
    home = await bob.arequest("GET", PREFIX, html=True)
    assert home.status == 200 or (
        home.status in (301, 302) and home.headers["Location"] == f"{PREFIX}direct/inbox/"
    ), (home.status, home.headers)
    for page_path in (f"{PREFIX}direct/inbox/", f"{PREFIX}direct/t/{a.handle}/"):
        page = await bob.arequest("GET", page_path, html=True)
        assert page.status == 200, (page_path, page.status, page.body[:2000])
        assert page.headers["Content-Type"].startswith("text/html"), page.headers
        html = page.body.decode()
        assets = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', html)
        assert any(u.endswith(".js") for u in assets) and any(u.endswith(".css") for u in assets), (
            assets
        )
        await fetch_assets(bob, [u for u in assets if u.startswith("/")])


async def fetch_assets(client: Client, urls: list[str]) -> None:
    """GET each static URL (200) and, for JavaScript modules, what they import."""
    done: set[str] = set()
    todo = list(urls)
    while todo:
        url = todo.pop()
        if url in done:
            continue
        done.add(url)
        asset = await client.arequest("GET", url)
        assert asset.status == 200, (url, asset.status)
        if url.endswith(".js"):
            for spec in re.findall(
                r'^\s*(?:import|export)\b[^"\']*?from\s*["\'](\.[^"\']+)["\']',
                asset.body.decode(),
                re.M,
            ):
                todo.append(urllib.parse.urljoin(url, spec))
            for spec in re.findall(
                r'^\s*import\s*["\'](\.[^"\']+)["\']', asset.body.decode(), re.M
            ):
                todo.append(urllib.parse.urljoin(url, spec))
    print(f"static files fetched (200): {len(done)}")


async def test_install_exchange(host: Host) -> None:
    started = time.monotonic()
    await exchange(host)
    TIMES[f"host {host.kind}: the exchange"] = time.monotonic() - started

    # No response body and no frame of the whole exchange shows an e-mail address (the
    # custom host's users log in with theirs; the stock host's users have one too).
    for person in (host.alice, host.bob):
        domain = person.email.split("@")[1]
        for text in host.seen:
            assert person.email.lower() not in text.lower(), f"{person.email} in: {text[:1000]}"
            assert domain not in text.lower(), f"an e-mail domain in: {text[:1000]}"
    assert host.proc is not None and host.proc.poll() is None, "daphne died"
    assert host.log is not None
    log = host.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-6000:]

    print(
        f"\nhost {host.kind}: {host.wiring_lines} lines of wiring (docs/install.md) + "
        f"{host.own_lines} of the host's own (session login, static files under DEBUG"
        f"{', user model settings' if host.kind == 'custom' else ''}); "
        f"{len(host.seen)} bodies and frames checked"
    )
    print("install test times: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))
