"""The one place where credentials become a user.

A request (HTTP) or a scope (WebSocket) carries ``Authorization: <scheme> <credentials>``
or a Django session cookie. :func:`authenticate` hands them to the authenticators of
``DIRECT_MESSAGES["AUTHENTICATORS"]`` in turn; the first to name a user wins. The
defaults accept the app's own Bearer tokens (:class:`TokenAuthenticator`) and the
host's Django session, whatever login made it (:class:`SessionAuthenticator`). A host
that already issues tokens adds an authenticator of its own (docs/install.md).

The API's auth class, the web client's pages and :class:`WebSocketAuthMiddleware` all
call :func:`authenticate`; nothing else looks at credentials.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
from django.conf import settings
from django.contrib.auth import authenticate as password_authenticate
from django.contrib.auth import get_user, get_user_model, update_session_auth_hash, user_logged_out
from django.contrib.auth import logout as session_logout
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.views import redirect_to_login
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import DisallowedHost, ValidationError
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import salted_hmac
from django.utils.http import is_same_domain
from django.utils.module_loading import import_string

from direct_messages.adapters import get_adapter
from direct_messages.conf import dm_setting
from direct_messages.db import in_thread
from direct_messages.errors import Forbidden, Invalid, Unauthenticated, envelope
from direct_messages.models import UserTokens
from direct_messages.realtime import broadcast_on_commit
from direct_messages.rooms import auth_group

TOKEN_ALGORITHM = "HS256"


@dataclass(frozen=True)
class Credentials:
    """What a request or a handshake brought: its ``Authorization`` header and session."""

    authorization: str | None
    session: SessionBase | None


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> Any | None:
        """The user these credentials name; None when they are not this
        authenticator's kind; :class:`Unauthenticated` when they are, but bad."""


# --- Tokens ------------------------------------------------------------------------------


def password_fingerprint(user: Any) -> str:
    """A digest of the user's password hash, as Django's sessions keep one: a token
    signed before the password changed no longer matches it."""
    digest = salted_hmac(
        "direct_messages.auth.token", getattr(user, "password", "") or "", algorithm="sha256"
    )
    return digest.hexdigest()[:24]


def token_issue(user: Any) -> tuple[str, dt.datetime]:
    """Sign a token for ``user`` with the host's ``SECRET_KEY``; returns it and its expiry."""
    now = dt.datetime.now(dt.UTC)
    expires_at = now + dt.timedelta(seconds=dm_setting("TOKEN_LIFETIME_SECONDS"))
    version = UserTokens.objects.filter(user_id=user.pk).values_list("version", flat=True)
    claims = {
        "sub": str(user.pk),
        "iat": now,
        "exp": expires_at,
        "aud": dm_setting("TOKEN_AUDIENCE"),
        "jti": uuid.uuid4().hex,
        "ver": version.first() or 0,
        "pwd": password_fingerprint(user),
    }
    return jwt.encode(claims, settings.SECRET_KEY, algorithm=TOKEN_ALGORITHM), expires_at


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a token of :func:`token_issue`, checked: signature, audience, expiry."""
    try:
        return dict(
            jwt.decode(
                token,
                settings.SECRET_KEY,
                algorithms=[TOKEN_ALGORITHM],
                audience=dm_setting("TOKEN_AUDIENCE"),
                options={"require": ["sub", "exp", "iat", "jti", "ver", "pwd"]},
            )
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated("invalid token") from exc


def token_user(token: str) -> Any:
    """The active user a token was signed for, unless it was revoked since: logged out
    (alone, or with all of the user's tokens) or signed before a password change."""
    claims = token_claims(token)
    User = get_user_model()
    tokens = UserTokens.objects.filter(user_id=OuterRef("pk"))
    users = User._default_manager.annotate(  # the user and their revocations in one query
        dm_token_version=Subquery(tokens.values("version")),
        dm_tokens_revoked=Subquery(tokens.values("revoked")),
    )
    try:
        user = users.get(pk=int(claims["sub"]))
    except (ValueError, TypeError, OverflowError, User.DoesNotExist) as exc:
        raise Unauthenticated("invalid token") from exc
    if not get_adapter().is_active(user):
        raise Unauthenticated("invalid token")
    if not hmac.compare_digest(str(claims["pwd"]), password_fingerprint(user)):
        raise Unauthenticated("token revoked: the password changed")
    revoked = user.dm_tokens_revoked or []
    if isinstance(revoked, str):  # a JSON subquery comes back as text on some backends
        revoked = json.loads(revoked)
    if claims["ver"] != (user.dm_token_version or 0) or any(j == claims["jti"] for j, _ in revoked):
        raise Unauthenticated("token revoked")
    return user


def token_revoke(user: Any, claims: dict[str, Any]) -> None:
    """Log out one token (its ``jti`` is refused until it would have expired anyway)."""
    now = time.time()
    with transaction.atomic():
        UserTokens.objects.get_or_create(user_id=user.pk)
        state = UserTokens.objects.select_for_update().get(user_id=user.pk)
        state.revoked = [[j, exp] for j, exp in state.revoked if exp > now]
        state.revoked.append([claims["jti"], claims["exp"]])
        state.save(update_fields=["revoked"])
        credentials_changed(user.pk, jti=claims["jti"])


def tokens_revoke_all(user: Any) -> None:
    """Log out every token of ``user``, wherever it is."""
    with transaction.atomic():
        UserTokens.objects.get_or_create(user_id=user.pk)
        UserTokens.objects.filter(user_id=user.pk).update(version=F("version") + 1, revoked=[])
        credentials_changed(user.pk)


# --- Flows: logging in, out, and changing the password --------------------------------


def password_login(request: HttpRequest, account: str, password: str) -> Any:
    """The active user of ``account`` (the public handle, or whatever the host's login
    takes as the username) and ``password``, checked by Django's ``authenticate()`` (so
    any backend of the host, and django-axes, see the attempt)."""
    if "\x00" in account:  # no username holds one, and PostgreSQL refuses it
        raise Unauthenticated("wrong account or password")
    known = get_adapter().get_user_by_handle(account)
    username = known.get_username() if known is not None else account
    user = password_authenticate(request, username=username, password=password)
    if user is None or not get_adapter().is_active(user):
        raise Unauthenticated("wrong account or password")
    return user


def logout(request: HttpRequest, *, everywhere: bool = False) -> None:
    """Revoke the token the request presented (a session: end it); ``everywhere``: every
    token of the user too. The sockets of what was revoked close (4401)."""
    token = bearer_token(request.headers.get("Authorization"))
    if everywhere:
        tokens_revoke_all(request.user)
    elif token is not None:
        token_revoke(request.user, token_claims(token))
    if token is None:
        session_logout(request)


def password_change(request: HttpRequest, old_password: str, new_password: str) -> Any:
    """Change the request's user's password (Django's validators apply). Every token and
    session of the user signed before stops working (the tokens carry a digest of the
    password hash, the sessions too); the request's own session is kept."""
    user: Any = request.user
    if not user.check_password(old_password):
        raise Forbidden("old_password: wrong password")
    try:
        validate_password(new_password, user=user)
    except ValidationError as exc:
        raise Invalid("new_password: " + " ".join(exc.messages)) from exc
    user.set_password(new_password)
    user.save()  # its post_save tells the user's sockets to check their credentials
    if bearer_token(request.headers.get("Authorization")) is None:
        update_session_auth_hash(request, user)
    return user


# --- Revocation reaches open sockets --------------------------------------------------


def credentials_changed(
    user_id: int, *, jti: str | None = None, session: str | None = None
) -> None:
    """Tell every open socket of the user, on every process, to check its credentials
    again once the change commits: the sockets of ``jti`` or ``session`` close at once."""
    event = {"type": "auth.revoked", "jti": jti, "session": session}
    broadcast_on_commit([(auth_group(user_id), event)])


def credentials_valid(user_id: int, authorization: str | None, session_key: str | None) -> bool:
    """Whether a socket's credentials, read afresh, still name its user."""
    session = None
    if session_key:
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user = authenticate(authorization, session)
    except Unauthenticated:
        return False
    return bool(user.is_authenticated and user.pk == user_id)


def _user_saved(
    sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    """A deactivation or a password change: the user's sockets check their credentials."""
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return  # a new user, or a login: no socket's credentials changed
    if instance.pk is not None:
        credentials_changed(instance.pk)


def _user_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if user is not None and session is not None and session.session_key:
        credentials_changed(user.pk, session=session.session_key)


def connect_signals() -> None:
    """Called from ``AppConfig.ready``: whatever changes a user's credentials, through
    the app or not (the admin, a password reset), reaches their open sockets."""
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="dm_user_saved")
    user_logged_out.connect(_user_logged_out, dispatch_uid="dm_user_logged_out")


class TokenAuthenticator:
    """``Authorization: Bearer <token>`` with a token of :func:`token_issue`."""

    def authenticate(self, credentials: Credentials) -> Any | None:
        token = bearer_token(credentials.authorization)
        return None if token is None else token_user(token)


def token_id(authorization: str | None) -> str | None:
    """The ``jti`` of the app's Bearer token in ``authorization``, if it is one."""
    try:
        token = bearer_token(authorization)
        return None if token is None else str(token_claims(token)["jti"])
    except Unauthenticated:
        return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None for another scheme."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or " " in token:
        raise Unauthenticated("malformed Authorization header; use 'Bearer <token>'")
    return token


class SessionAuthenticator:
    """The host's Django session, from whatever login view made it.

    Not consulted when the request carries an ``Authorization`` header: a client that
    sent credentials meant those.
    """

    def authenticate(self, credentials: Credentials) -> Any | None:
        if credentials.authorization is not None or credentials.session is None:
            return None
        user = get_user(_SessionHolder(credentials.session))  # type: ignore[arg-type]
        return user if user.is_authenticated else None


@dataclass
class _SessionHolder:
    """What ``django.contrib.auth.get_user`` needs of a request: its session."""

    session: SessionBase


@functools.cache
def authenticators() -> list[Authenticator]:
    return [import_string(path)() for path in dm_setting("AUTHENTICATORS")]


@receiver(setting_changed)
def _forget_authenticators(*, setting: str, **kwargs: Any) -> None:
    if setting == "DIRECT_MESSAGES":
        authenticators.cache_clear()


def authenticate(authorization: str | None, session: SessionBase | None) -> Any:
    """Return the user behind the credentials; ``AnonymousUser`` if there are none.

    An ``Authorization`` header that no authenticator accepts is an error even when a
    session is present.
    """
    credentials = Credentials(authorization, session)
    for authenticator in authenticators():
        user = authenticator.authenticate(credentials)
        if user is not None:
            return user
    if authorization is not None:
        raise Unauthenticated("unsupported Authorization header; use 'Bearer <token>'")
    return AnonymousUser()


def authenticate_request(request: HttpRequest) -> Any:
    return authenticate(request.headers.get("Authorization"), getattr(request, "session", None))


def login_check(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require an authenticated user on a plain Django view (the web client's pages).

    Bad credentials get the API's 401 envelope; no credentials on a page redirect to
    the host's ``LOGIN_URL`` (with ``next``), and get the 401 envelope on anything that
    asked for JSON.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            user = authenticate_request(request)
        except Unauthenticated as exc:
            return JsonResponse(envelope(exc.code, exc.detail), status=401)
        if not user.is_authenticated:
            if "text/html" in request.headers.get("Accept", ""):
                return redirect_to_login(request.get_full_path())
            return JsonResponse(envelope("unauthenticated", "authentication required"), status=401)
        request.user = user
        return view(request, *args, **kwargs)

    return wrapper


def header(scope: dict[str, Any], name: bytes) -> str | None:
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
                header(scope, b"authorization"), scope.get("session")
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
    script); it is let through when it carries an ``Authorization`` header. A cookie session always
    needs an allowed ``Origin``: that is what stops cross-site WebSocket hijacking.
    Channels' ``AllowedHostsOriginValidator`` is not enough: it ignores the port and the
    scheme, and reads the last of several ``Origin`` headers.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        from channels.security.websocket import WebsocketDenier

        if header(scope, b"origin") is None and header(scope, b"authorization"):
            return await self.inner(scope, receive, send)
        if origin_allowed(scope):
            return await self.inner(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
