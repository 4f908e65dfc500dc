"""Forms of the web client's account pages: log in with an account handle, sign up."""

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, BaseUserCreationForm

from users.accounts import ACCOUNT_MAX_LENGTH, normalize_account

ACCOUNT_HELP = "1 to 30 characters: letters, numbers, periods and underscores."


class LoginForm(AuthenticationForm):
    """Django's login form, worded for account handles (case-insensitive)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Sorry, that account and password don't match. Please try again.",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].label = "Account"
        self.fields["username"].widget.attrs.update(
            {"autocapitalize": "none", "autocomplete": "username", "spellcheck": "false"}
        )


class SignupForm(BaseUserCreationForm):
    """Account, display name and password, checked by Django's password validators.

    The handle is lower-cased before the model's validators and uniqueness check run,
    so ``Alice`` is taken when ``alice`` exists.
    """

    class Meta:
        model = get_user_model()
        fields = ("account", "name")
        labels = {"account": "Account", "name": "Full name"}
        help_texts = {"account": ACCOUNT_HELP}
        error_messages = {"account": {"unique": "That account is taken. Try another."}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = self.fields["account"]
        assert isinstance(account, forms.CharField)
        account.max_length = ACCOUNT_MAX_LENGTH
        account.widget.attrs.update(
            {"autocapitalize": "none", "autocomplete": "username", "spellcheck": "false"}
        )
        self.fields["name"].required = False
        self.fields["name"].widget.attrs["autocomplete"] = "name"

    def clean_account(self) -> str:
        return normalize_account(self.cleaned_data.get("account") or "")
