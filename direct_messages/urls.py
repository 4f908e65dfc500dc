"""The web client's pages (``/direct/...``)."""

from django.urls import path

from direct_messages import views

app_name = "direct_messages"

urlpatterns = [
    path("", views.home, name="home"),
    path("direct/inbox/", views.inbox, name="inbox"),
    path("direct/t/<str:account>/", views.thread, name="thread"),
]
