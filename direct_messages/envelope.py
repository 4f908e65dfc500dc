"""Every error under the API's URLs in PROTOCOL.md's JSON envelope, whoever produced it.

django-ninja's handlers cover what happens inside an operation; :func:`api_envelope`
wraps each of the API's URL patterns for the rest (a wrong method's 405, anything that
escaped as an exception), and :func:`api_not_found` answers every unknown path under
the API. Both work without any middleware in the host's settings.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from direct_messages.errors import CODE_BY_STATUS, Internal, envelope

logger = logging.getLogger(__name__)

DETAIL_BY_STATUS = {
    400: "bad request",
    403: "forbidden",
    404: "no such endpoint",
    405: "method not allowed",
    413: "request body too large",
}


def _enveloped(response: HttpResponse) -> HttpResponse:
    if response.status_code < 400:
        return response
    if response.get("Content-Type", "").startswith("application/json"):
        return response
    status = response.status_code
    code = CODE_BY_STATUS.get(status, "invalid" if status < 500 else Internal.code)
    wrapped = JsonResponse(envelope(code, DETAIL_BY_STATUS.get(status, code)), status=status)
    if response.has_header("Allow"):
        wrapped["Allow"] = response["Allow"]
    return wrapped


def api_envelope(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``view``, with its non-JSON errors and its escaped exceptions as envelopes."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return _enveloped(view(request, *args, **kwargs))
        except RequestDataTooBig:
            return JsonResponse(envelope("too_large", "request body too large"), status=413)
        except Http404:  # django-ninja's own root view (the bare API path) raises it
            return JsonResponse(envelope("not_found", DETAIL_BY_STATUS[404]), status=404)
        except PermissionDenied:
            return JsonResponse(envelope("forbidden", DETAIL_BY_STATUS[403]), status=403)
        except (BadRequest, SuspiciousOperation, MultiPartParserError):
            return JsonResponse(envelope("invalid", DETAIL_BY_STATUS[400]), status=400)
        except Exception:
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return JsonResponse(envelope(Internal.code, "internal server error"), status=500)

    return wrapper


@csrf_exempt  # an unknown path is a 404 for every method, before any CSRF check
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return JsonResponse(envelope("not_found", "no such endpoint"), status=404)
