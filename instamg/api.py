"""The project's HTTP API: one NinjaAPI, the apps' routers mounted on it."""

from decorators.api import build_api
from direct_messages.api import router as direct_messages_router
from direct_messages.api_attachments import router as attachments_router
from users.api import auth_router, users_router

api = build_api(title="instamg direct messages", version="1.0.0")
api.add_router("/auth", auth_router)
api.add_router("/users", users_router)
api.add_router("/", direct_messages_router)
api.add_router("/attachments", attachments_router)
