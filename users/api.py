"""The demo host's signup endpoint, mounted on the app's API by
``DIRECT_MESSAGES["API_ROUTERS"]`` (``POST /api/auth/signup``)."""

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Status

from direct_messages.adapters import user_out
from direct_messages.auth import token_issue
from direct_messages.http import RateThrottle, errors
from users import services
from users.schemas import SignupIn, SignupOut

signup_router = Router(tags=["auth"])


# A signup costs a password hash: limited per client address (settings.SIGNUP_RATE).
signup_throttle = RateThrottle("signup", lambda: settings.SIGNUP_RATE, per="client")


@signup_router.post(
    "/signup",
    response={201: SignupOut, **errors(400, 409, 413, 429)},
    auth=None,
    throttle=signup_throttle,
)
def signup(request: HttpRequest, payload: SignupIn) -> Status:
    user = services.user_signup(
        account=payload.account, password=payload.password, name=payload.name
    )
    token, _ = token_issue(user)
    return Status(201, {"user": user_out(user), "token": token})
