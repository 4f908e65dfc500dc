"""Login, signup and logout pages for the web client (``/accounts/...``)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
