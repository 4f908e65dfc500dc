"""The web client's pages. Each renders one shell; the ES modules in
``static/direct_messages/js/`` fill it from the HTTP API and the WebSockets.

The pages authenticate with the session (``login_check`` sends anonymous visitors to
the login form) and set the CSRF cookie, which the client sends back as
``X-CSRFToken`` on the API's state-changing requests.
"""

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from decorators.auth import login_check
from direct_messages import services
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, NotFound
from direct_messages.schemas import user_out

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
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _client_config(request: HttpRequest, peer: Any | None) -> dict[str, Any]:
    """What the client needs before its first request, rendered with ``json_script``."""
    return {
        "me": user_out(request.user),
        "peer": user_out(peer) if peer is not None else None,
        "csrf_token": get_token(request),
        "inbox_url": reverse("direct_messages:inbox"),
        "thread_url": reverse("direct_messages:thread", args=["ACCOUNT"]),
        "limits": {
            "message_max_length": dm_setting("MESSAGE_MAX_LENGTH"),
            "attachments_per_message": dm_setting("ATTACHMENTS_PER_MESSAGE"),
            "file_max_bytes": dm_setting("FILE_MAX_BYTES"),
            "edit_window_seconds": dm_setting("EDIT_WINDOW_SECONDS"),
        },
    }


def _page(request: HttpRequest, peer: Any | None) -> HttpResponse:
    context = {"config": _client_config(request, peer), "peer": peer}
    response = render(request, "direct_messages/direct.html", context)
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "same-origin"
    return response


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """``/``: the inbox (which sends anonymous visitors on to the login form)."""
    return redirect("direct_messages:inbox")


@require_safe
@login_check
@ensure_csrf_cookie
def inbox(request: HttpRequest) -> HttpResponse:
    """``/direct/inbox/``: the conversation list, with an empty conversation pane."""
    return _page(request, None)


@require_safe
@login_check
@ensure_csrf_cookie
def thread(request: HttpRequest, account: str) -> HttpResponse:
    """``/direct/t/<account>/``: one conversation beside the list.

    Unknown accounts are a 404; your own account leads back to the inbox. A blocked
    conversation still opens: its history is readable, sending is refused.
    """
    try:
        peer = services.peer_resolve(request.user, account, allow_blocked=True)
    except NotFound as exc:
        raise Http404(str(exc)) from exc
    except Forbidden:
        return redirect("direct_messages:inbox")
    if account != peer.account:
        return redirect("direct_messages:thread", account=peer.account)
    return _page(request, peer)
