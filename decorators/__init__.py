"""The demo host's view decorators (the seed's ``login_check``), on the app's
authentication: a session or a Bearer token, as ``direct_messages.auth`` decides."""

from direct_messages.auth import login_check

__all__ = ["login_check"]
