"""The web client's pages. Each renders one shell; the ES modules in
``static/direct_messages/js/`` fill it from the HTTP API and the WebSockets.

The pages authenticate with the host's session (``login_check`` sends anonymous
visitors to the host's ``LOGIN_URL``) and set the CSRF cookie, which the client sends
back as ``X-CSRFToken`` on the API's state-changing requests. Every URL the client
needs comes from here (``_client_config``), so the app works under any prefix.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth import logout as session_logout
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render, resolve_url
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST, require_safe

from direct_messages import services
from direct_messages.adapters import handle_of, user_out
from direct_messages.auth import login_check
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, NotFound
from direct_messages.schemas import api_root

# Message text is rendered with textContent; this policy is the second line of defence:
# no inline script, no plugin, no framing, and the page talks only to its own origin
# (attachment URLs may redirect to object storage over HTTPS).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data: https:",
        "media-src 'self' blob: https:",
        "connect-src 'self'",
        "worker-src 'self'",  # the service worker (direct/sw.js): Web Push notifications
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _client_config(request: HttpRequest, me: dict[str, Any], peer: dict[str, Any] | None) -> Any:
    """What the client needs before its first request, rendered with ``json_script``."""
    home = reverse("direct_messages:home")
    return {
        "me": me,
        "peer": peer,
        "csrf_token": get_token(request),
        "api_url": api_root(),
        "ws_url": f"{home}ws/",
        "login_url": resolve_url(settings.LOGIN_URL),
        "logout_url": reverse("direct_messages:logout"),
        "inbox_url": reverse("direct_messages:inbox"),
        "thread_url": reverse("direct_messages:thread", args=["ACCOUNT"]),
        "service_worker_url": reverse("direct_messages:service_worker"),
        "limits": {
            "message_max_length": dm_setting("MESSAGE_MAX_LENGTH"),
            "attachments_per_message": dm_setting("ATTACHMENTS_PER_MESSAGE"),
            "file_max_bytes": dm_setting("FILE_MAX_BYTES"),
            "edit_window_seconds": dm_setting("EDIT_WINDOW_SECONDS"),
        },
    }


def _page(request: HttpRequest, peer: Any | None) -> HttpResponse:
    me, them = user_out(request.user), user_out(peer) if peer is not None else None
    context = {"config": _client_config(request, me, them), "me": me, "peer": them}
    response = render(request, "direct_messages/direct.html", context)
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "same-origin"
    return response


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """``<prefix>``: the inbox (which sends anonymous visitors on to the login form)."""
    return redirect("direct_messages:inbox")


@require_safe
@login_check
@ensure_csrf_cookie
def inbox(request: HttpRequest) -> HttpResponse:
    """``<prefix>direct/inbox/``: the conversation list, with an empty conversation pane."""
    return _page(request, None)


@require_safe
@login_check
@ensure_csrf_cookie
def thread(request: HttpRequest, account: str) -> HttpResponse:
    """``<prefix>direct/t/<account>/``: one conversation beside the list.

    Unknown accounts are a 404; your own account leads back to the inbox. A blocked
    conversation still opens: its history is readable, sending is refused.
    """
    try:
        peer = services.peer_resolve(request.user, account, allow_blocked=True)
    except NotFound as exc:
        raise Http404(str(exc)) from exc
    except Forbidden:
        return redirect("direct_messages:inbox")
    if account != handle_of(peer):
        return redirect("direct_messages:thread", account=handle_of(peer))
    return _page(request, peer)


# The worker shows notifications and opens pages; it fetches nothing and runs no other
# script, so its own policy (a worker's comes with its script) allows nothing.
SERVICE_WORKER_POLICY = "default-src 'none'"


@require_safe
def service_worker(request: HttpRequest) -> HttpResponse:
    """``<prefix>direct/sw.js``: the service worker that shows Web Push notifications.

    Served here, not from the static files, so that its scope (the script's directory,
    ``<prefix>direct/``) covers the inbox and every conversation under whatever prefix
    the host mounts the app at, and so that a new version is fetched at once: browsers
    check for one on navigation, and ``no-cache`` makes every check reach the server.
    No login is needed: it is the same file for everyone and carries no data.
    """
    response = HttpResponse(
        render_to_string("direct_messages/sw.js"), content_type="text/javascript; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["Content-Security-Policy"] = SERVICE_WORKER_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """End the session (POST only, as Django's ``LogoutView``: a link or an image tag
    cannot log anyone out) and go to the host's ``LOGOUT_REDIRECT_URL``, else its login."""
    session_logout(request)
    return redirect(resolve_url(settings.LOGOUT_REDIRECT_URL or settings.LOGIN_URL))
