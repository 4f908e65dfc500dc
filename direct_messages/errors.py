"""Typed errors, each with the code and status of PROTOCOL.md's error table.

Services raise these; each transport maps them once: the HTTP API to the JSON
envelope, the WebSocket consumers to ``error`` frames.
"""

from typing import ClassVar


class ApiError(Exception):
    code: ClassVar[str] = "invalid"
    status: ClassVar[int] = 400

    def __init__(self, detail: str = "", *, ref: object = None) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code.replace("_", " ")
        self.ref = ref


class Invalid(ApiError):
    code, status = "invalid", 400


class Unauthenticated(ApiError):
    code, status = "unauthenticated", 401


class Forbidden(ApiError):
    code, status = "forbidden", 403


class NotFound(ApiError):
    code, status = "not_found", 404


class MethodNotAllowed(ApiError):
    code, status = "method_not_allowed", 405


class Conflict(ApiError):
    code, status = "conflict", 409


class TooLarge(ApiError):
    code, status = "too_large", 413


class UnsupportedMediaType(ApiError):
    code, status = "unsupported_media_type", 415


class RateLimited(ApiError):
    code, status = "rate_limited", 429

    def __init__(self, detail: str = "", *, retry_after: int = 1, ref: object = None) -> None:
        super().__init__(detail, ref=ref)
        self.retry_after = retry_after


class Internal(ApiError):
    """A bug, not bad input: reported without details."""

    code, status = "internal", 500


CODE_BY_STATUS = {
    cls.status: cls.code
    for cls in (
        Invalid,
        Unauthenticated,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        TooLarge,
        UnsupportedMediaType,
        RateLimited,
        Internal,
    )
}


def envelope(code: str, detail: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "detail": detail}}


DirectMessageError = ApiError
