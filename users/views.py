"""The web client's account pages: log in, sign up, log out (Django's auth views)."""

from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.views import LoginView, LogoutView, RedirectURLMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic.edit import FormView

from users.api import signup_throttle
from users.forms import LoginForm, SignupForm


class AccountLoginView(LoginView):
    """Log in with account and password; a logged-in visitor goes straight on."""

    form_class = LoginForm
    template_name = "users/login.html"
    redirect_authenticated_user = True


@method_decorator([sensitive_post_parameters(), csrf_protect, never_cache], name="dispatch")
class SignupView(RedirectURLMixin, FormView):
    """Create an account, log it in and go to the inbox (or the safe ``next``)."""

    form_class = SignupForm
    template_name = "users/signup.html"
    next_page = settings.LOGIN_REDIRECT_URL

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.is_authenticated:
            return HttpResponseRedirect(self.get_success_url())
        return super().dispatch(request, *args, **kwargs)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not signup_throttle.allow_request(request):  # the API's signup limit, shared
            form = self.get_form()
            form.add_error(None, "Too many sign-ups from your address. Try again later.")
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(int(signup_throttle.wait() or 1))
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: SignupForm) -> HttpResponse:
        user = form.save()
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        return HttpResponseRedirect(self.get_success_url())

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context[self.redirect_field_name] = self.get_redirect_url()
        return context


class AccountLogoutView(LogoutView):
    """POST only (Django's rule): a link or an image tag cannot log anyone out."""
