"""What a client locked out by django-axes gets: the API's 429 envelope on the API, the
login page again (status 429) with the reason everywhere else."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from direct_messages.errors import envelope
from users.forms import LoginForm

LOCKED_OUT = "Too many failed logins. Try again later."


def lockout_response(
    request: HttpRequest, original: Any = None, credentials: Any = None
) -> HttpResponse:
    retry_after = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    if "/api/" in request.path:
        response: HttpResponse = JsonResponse(envelope("rate_limited", LOCKED_OUT), status=429)
    else:
        context = {"form": LoginForm(request), "lockout": LOCKED_OUT}
        response = render(request, "users/login.html", context, status=429)
    response["Retry-After"] = retry_after
    return response
