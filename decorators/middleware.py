"""Every error under ``/api/`` in PROTOCOL.md's JSON envelope, whoever produced it.

django-ninja's handlers cover what happens inside an operation; this middleware covers
the rest: unknown routes (Django's 404), wrong methods (405), CSRF refusals, oversized
bodies and anything that escaped as an exception.
"""

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

from decorators.errors import CODE_BY_STATUS, Internal, envelope

logger = logging.getLogger(__name__)

DETAIL_BY_STATUS = {
    400: "bad request",
    403: "forbidden",
    404: "no such endpoint",
    405: "method not allowed",
    413: "request body too large",
}


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


class ApiErrorEnvelopeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not is_api_request(request) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        status = response.status_code
        code = CODE_BY_STATUS.get(status, "invalid" if status < 500 else Internal.code)
        wrapped = JsonResponse(envelope(code, DETAIL_BY_STATUS.get(status, code)), status=status)
        if response.has_header("Allow"):
            wrapped["Allow"] = response["Allow"]
        return wrapped

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_request(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(envelope("too_large", "request body too large"), status=413)
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return JsonResponse(envelope(Internal.code, "internal server error"), status=500)
