"""The django-ninja side of authentication and errors, shared by every router of the API."""

import logging
import math
from typing import Any, Literal

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.security import HttpBearer
from ninja.throttling import SimpleRateThrottle
from ninja.utils import check_csrf

from direct_messages.auth import authenticate_request
from direct_messages.errors import (
    CODE_BY_STATUS,
    ApiError,
    Forbidden,
    Internal,
    RateLimited,
    envelope,
)

logger = logging.getLogger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class ErrorBody(Schema):
    code: Literal[
        "invalid",
        "unauthenticated",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "conflict",
        "too_large",
        "unsupported_media_type",
        "rate_limited",
        "internal",
    ]
    detail: str


class ErrorOut(Schema):
    """PROTOCOL.md's error envelope: ``{"error": {"code", "detail"}}``."""

    error: ErrorBody


def errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    """``response=`` entries documenting the error statuses an operation may answer.

    Only documentation: errors are raised, and the handlers below write the envelope.
    """
    return dict.fromkeys(statuses, ErrorOut)


class LoginCheck(HttpBearer):
    """Bearer token or session, through :func:`direct_messages.auth.authenticate`.

    Session requests that change state must pass Django's CSRF check; token requests
    need none (a cross-site page cannot set the header). Missing credentials are
    refused with 401 before any CSRF check.
    """

    def __call__(self, request: HttpRequest) -> Any:
        user = authenticate_request(request)
        if not user.is_authenticated:
            return None
        needs_csrf = "Authorization" not in request.headers and request.method not in SAFE_METHODS
        if needs_csrf and check_csrf(request) is not None:
            raise Forbidden("CSRF check failed: send the csrftoken as X-CSRFToken")
        request.user = user
        return user

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        raise NotImplementedError


class RateThrottle(SimpleRateThrottle):
    """django-ninja's cache-backed throttle, per client address or per user, at a rate
    read from settings on every request (``"30/min"``).

    The client is ``REMOTE_ADDR`` unless ``NINJA_NUM_PROXIES`` says how many proxies'
    ``X-Forwarded-For`` entries to trust: django-ninja's default would key on the whole
    header, which the client writes. The cache is the host's default: with several
    processes it must be a shared one (Redis) for the rate to hold across them.
    """

    def __init__(self, scope: str, rate: Any, *, per: Literal["client", "user"]) -> None:
        self.scope, self.rate_of, self.per = scope, rate, per
        super().__init__(rate())

    def get_ident(self, request: HttpRequest) -> str | None:
        from ninja.conf import settings as ninja_settings

        if ninja_settings.NUM_PROXIES is None:
            return request.META.get("REMOTE_ADDR")
        return super().get_ident(request)

    def get_cache_key(self, request: HttpRequest) -> str:
        user = getattr(request, "user", None)
        if self.per == "user" and user is not None and user.is_authenticated:
            ident = f"user-{user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: HttpRequest) -> bool:
        self.rate = self.rate_of()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return bool(super().allow_request(request))


def _format_validation_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        where = ".".join(loc[1:] if loc and loc[0] in ("payload", "data") else loc)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def build_api(**kwargs: Any) -> NinjaAPI:
    api = NinjaAPI(auth=LoginCheck(), openapi_url="/openapi.json", docs_url="/docs", **kwargs)

    def respond(request: HttpRequest, status: int, code: str, detail: str) -> HttpResponse:
        return api.create_response(request, envelope(code, detail), status=status)

    @api.exception_handler(ApiError)
    def api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        response = respond(request, exc.status, exc.code, exc.detail)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response

    @api.exception_handler(ValidationError)
    def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        return respond(request, 400, "invalid", _format_validation_errors(exc.errors))

    @api.exception_handler(AuthenticationError)
    def authentication_error(request: HttpRequest, exc: Exception) -> HttpResponse:
        return respond(request, 401, "unauthenticated", "authentication required")

    @api.exception_handler(Throttled)
    def throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
        response = respond(request, 429, RateLimited.code, "too many requests; try again later")
        response["Retry-After"] = str(max(1, math.ceil(exc.wait or 1)))
        return response

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        code = CODE_BY_STATUS.get(exc.status_code, "invalid")
        return respond(request, exc.status_code, code, str(exc) or code)

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
        return respond(request, 404, "not_found", "not found")

    @api.exception_handler(MultiPartParserError)
    def bad_multipart(request: HttpRequest, exc: Exception) -> HttpResponse:
        return respond(request, 400, "invalid", f"malformed multipart body: {exc}")

    @api.exception_handler(SuspiciousOperation)
    def suspicious(request: HttpRequest, exc: Exception) -> HttpResponse:
        return respond(request, 400, "invalid", "malformed request")

    @api.exception_handler(RequestDataTooBig)
    def too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
        return respond(request, 413, "too_large", "request body too large")

    @api.exception_handler(Exception)
    def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return respond(request, Internal.status, Internal.code, "internal server error")

    return api
