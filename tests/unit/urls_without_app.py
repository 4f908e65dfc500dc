"""A host URLconf that forgot ``include("direct_messages.urls")``."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
