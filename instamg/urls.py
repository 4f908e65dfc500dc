from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path

from decorators.errors import envelope
from instamg.api import api


def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return JsonResponse(envelope("not_found", "no such endpoint"), status=404)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
    path("accounts/", include("users.urls")),
    path("", include("direct_messages.urls")),
]
