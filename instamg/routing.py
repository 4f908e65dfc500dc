from django.urls import re_path

from direct_messages.consumers import DirectMessageConsumer, InboxConsumer

websocket_urlpatterns = [
    re_path(r"^ws/dm/(?P<account>[^/]{1,64})/$", DirectMessageConsumer.as_asgi()),
    re_path(r"^ws/inbox/$", InboxConsumer.as_asgi()),
]
