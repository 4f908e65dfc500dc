"""The demo host's Content-Security-Policy, on every response it serves."""

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

# The host's own pages (login, signup, the admin, the API's docs) load scripts, styles
# and images from this origin only and run no inline script; none may be framed.
# ``data:`` images are Swagger UI's icons (/api/docs).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Give every response that has no ``Content-Security-Policy`` the host's.

    Django 5.2 has none of its own. Responses that set a policy keep theirs: the app's
    pages (stricter, ``direct_messages.views``) and its file downloads (``sandbox``).
    Under DEBUG, Django's error pages go without: they style and script themselves
    inline.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if settings.DEBUG and response.status_code >= 400:
            return response
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
