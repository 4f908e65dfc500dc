"""The one place where credentials become a user.

A request (HTTP) or a scope (WebSocket) carries either ``Authorization: Bearer <JWT>``
or a Django session cookie. :func:`authenticate` turns either into a user or raises
:class:`~decorators.errors.Unauthenticated`; the API's auth class, :func:`login_check`
for plain views and :class:`WebSocketAuthMiddleware` all call it. Nothing else
parses tokens.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils.http import is_same_domain

from decorators.db import in_thread
from decorators.errors import Unauthenticated, envelope

TOKEN_ALGORITHM = "HS256"
TOKEN_AUDIENCE = "instamg"


def token_issue(user: Any) -> tuple[str, dt.datetime]:
    """Sign a token for ``user``; returns the token and its expiry time."""
    now = dt.datetime.now(dt.UTC)
    expires_at = now + dt.timedelta(seconds=settings.TOKEN_LIFETIME_SECONDS)
    claims = {"sub": str(user.pk), "iat": now, "exp": expires_at, "aud": TOKEN_AUDIENCE}
    return jwt.encode(claims, settings.SECRET_KEY, algorithm=TOKEN_ALGORITHM), expires_at


def _user_from_token(token: str) -> Any:
    try:
        claims = jwt.decode(
            token,
            settings.SECRET_KEY,
            algorithms=[TOKEN_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            options={"require": ["sub", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated("invalid token") from exc
    try:
        user_id = int(claims["sub"])
        user = get_user_model().objects.get(pk=user_id, is_active=True)
    except (ValueError, TypeError, get_user_model().DoesNotExist) as exc:
        raise Unauthenticated("invalid token") from exc
    return user


@dataclass
class _SessionHolder:
    """What ``django.contrib.auth.get_user`` needs of a request: its session."""

    session: SessionBase


def authenticate(authorization: str | None, session: SessionBase | None) -> Any:
    """Return the user behind a Bearer token or a session; ``AnonymousUser`` if neither.

    A malformed or invalid ``Authorization`` header is an error even when a session
    is present: a client that sent a token meant that token.
    """
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
            raise Unauthenticated("malformed Authorization header; use 'Bearer <token>'")
        return _user_from_token(token.strip())
    if session is not None:
        return get_user(_SessionHolder(session))  # type: ignore[arg-type]
    return AnonymousUser()


def authenticate_request(request: HttpRequest) -> Any:
    return authenticate(request.headers.get("Authorization"), getattr(request, "session", None))


def login_check(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require an authenticated user on a plain Django view.

    Bad credentials get the API's 401 envelope; no credentials on a page redirect to
    the login form, and get the 401 envelope on anything that asked for JSON.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            user = authenticate_request(request)
        except Unauthenticated as exc:
            return JsonResponse(envelope(exc.code, exc.detail), status=401)
        if not user.is_authenticated:
            if "text/html" in request.headers.get("Accept", ""):
                query = urlencode({"next": request.path}, safe="/")
                return redirect(f"{settings.LOGIN_URL}?{query}")
            return JsonResponse(envelope("unauthenticated", "authentication required"), status=401)
        request.user = user
        return view(request, *args, **kwargs)

    return wrapper


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class WebSocketAuthMiddleware:
    """Put ``user`` (and ``auth_error`` when the credentials were bad) in the scope.

    It never refuses the handshake itself: PROTOCOL.md wants the server to accept and
    then close with 4401, so that clients can read the reason.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        try:
            scope["user"] = await in_thread(authenticate)(
                _header(scope, b"authorization"), scope.get("session")
            )
        except Unauthenticated as exc:
            scope["user"], scope["auth_error"] = AnonymousUser(), exc.detail
        return await self.inner(scope, receive, send)


# A serialized origin as browsers send it (RFC 6454): scheme, host, optional port, nothing
# else. Userinfo, paths, spaces, lists and upper case never come from a browser.
_SERIALIZED_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9._\-\[\]:]+")


class _Handshake(HttpRequest):
    """A WebSocket handshake as Django's host and scheme checks see a request: ``Host``
    against ALLOWED_HOSTS, ``SECURE_PROXY_SSL_HEADER`` and ``USE_X_FORWARDED_HOST``
    honoured, duplicate headers joined with commas (which no host check accepts)."""

    def __init__(self, scope: dict[str, Any]) -> None:
        super().__init__()
        for key, value in scope.get("headers", []):
            name = "HTTP_" + key.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            self.META[name] = f"{self.META[name]},{text}" if name in self.META else text
        server = scope.get("server") or ("", 0)
        self.META["SERVER_NAME"], self.META["SERVER_PORT"] = str(server[0]), str(server[1])
        self._secure = scope.get("scheme") in ("wss", "https")

    def _get_scheme(self) -> str:
        return "https" if self._secure else "http"


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the handshake's one ``Origin`` is this server's own origin (its scheme
    and its ``Host``, which must be in ALLOWED_HOSTS) or in CSRF_TRUSTED_ORIGINS: the
    rule Django's CSRF check applies to a session's POST, port and scheme included."""
    origins = [value for key, value in scope.get("headers", []) if key.lower() == b"origin"]
    if len(origins) != 1:
        return False
    origin = origins[0].decode("latin-1")
    if not _SERIALIZED_ORIGIN.fullmatch(origin):
        return False
    request = _Handshake(scope)
    try:
        if origin == f"{request.scheme}://{request.get_host()}":
            return True
    except DisallowedHost:
        pass
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    scheme, netloc = urlsplit(origin)[:2]
    return any(
        urlsplit(pattern).scheme == scheme
        and is_same_domain(netloc, urlsplit(pattern).netloc.lstrip("*"))
        for pattern in trusted
        if "*" in pattern
    )


class OriginCheckMiddleware:
    """Refuse (HTTP 403) a WebSocket handshake from any origin but the server's own.

    A handshake without ``Origin`` comes from a non-browser client (mobile app,
    script); it is let through when it carries a Bearer token. A cookie session always
    needs an allowed ``Origin``: that is what stops cross-site WebSocket hijacking.
    Channels' ``AllowedHostsOriginValidator`` is not enough: it ignores the port and the
    scheme, and reads the last of several ``Origin`` headers.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        from channels.security.websocket import WebsocketDenier

        authorization = _header(scope, b"authorization") or ""
        if _header(scope, b"origin") is None and authorization.lower().startswith("bearer "):
            return await self.inner(scope, receive, send)
        if origin_allowed(scope):
            return await self.inner(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
