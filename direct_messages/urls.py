"""The web client's pages (``/direct/...``)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
