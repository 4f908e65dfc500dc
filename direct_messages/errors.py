"""The typed errors services raise; see :mod:`decorators.errors`."""

from decorators.errors import (
    ApiError,
    Conflict,
    Forbidden,
    Internal,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)

DirectMessageError = ApiError

__all__ = [
    "ApiError",
    "Conflict",
    "DirectMessageError",
    "Forbidden",
    "Internal",
    "Invalid",
    "NotFound",
    "RateLimited",
    "TooLarge",
    "Unauthenticated",
    "UnsupportedMediaType",
]
