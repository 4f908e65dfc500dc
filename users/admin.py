from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import BaseUserCreationForm, UserChangeForm

from users.models import User


class AccountCreationForm(BaseUserCreationForm):
    class Meta:
        model = User
        fields = ("account",)


class AccountChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = AccountChangeForm
    add_form = AccountCreationForm
    ordering = ["account"]
    list_display = ["account", "name", "is_staff", "date_joined"]
    search_fields = ["account", "name"]
    fieldsets = (
        (None, {"fields": ("account", "password")}),
        ("Profile", {"fields": ("name", "email", "avatar")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("account", "password1", "password2")}),
    )
