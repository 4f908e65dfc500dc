"""Login, signup and logout pages for the web client (``/accounts/...``)."""

from django.urls import path

from users import views

app_name = "users"

urlpatterns = [
    path("login/", views.AccountLoginView.as_view(), name="login"),
    path("signup/", views.SignupView.as_view(), name="signup"),
    path("logout/", views.AccountLogoutView.as_view(), name="logout"),
]
