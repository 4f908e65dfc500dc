from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest

from direct_messages.models import (
    Block,
    DirectMessage,
    DirectMessageAttachFiles,
    Reaction,
    Room,
    RoomMember,
)


def _username(relation: str) -> str:
    """A search field on the host's user model, whatever its username field is."""
    return f"{relation}__{get_user_model().USERNAME_FIELD}"


class RoomMemberInline(admin.TabularInline):
    model = RoomMember
    fk_name = "room"
    extra = 0
    raw_id_fields = ["user", "other"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["key", "user_lo", "user_hi", "last_seq", "last_activity_at"]
    raw_id_fields = ["user_lo", "user_hi", "last_message"]
    inlines = [RoomMemberInline]

    def get_search_fields(self, request: HttpRequest) -> Any:
        return ["key", _username("user_lo"), _username("user_hi")]


@admin.register(DirectMessage)
class DirectMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "seq", "sender", "created_at", "edited_at", "unsent_at"]
    list_filter = ["created_at"]
    raw_id_fields = ["room", "sender", "reply_to"]

    def get_search_fields(self, request: HttpRequest) -> Any:
        return ["room__key", _username("sender")]


@admin.register(DirectMessageAttachFiles)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "content_type", "size", "uploader", "message", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["message", "uploader"]


@admin.register(Reaction)
class ReactionAdmin(admin.ModelAdmin):
    list_display = ["message", "user", "emoji", "created_at"]
    raw_id_fields = ["message", "user"]


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    list_display = ["blocker", "blocked", "created_at"]
    raw_id_fields = ["blocker", "blocked"]
