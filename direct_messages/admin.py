from django.contrib import admin

from direct_messages.models import (
    Block,
    DirectMessage,
    DirectMessageAttachFiles,
    Reaction,
    Room,
    RoomMember,
)


class RoomMemberInline(admin.TabularInline):
    model = RoomMember
    fk_name = "room"
    extra = 0
    raw_id_fields = ["user", "other"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["key", "user_lo", "user_hi", "last_seq", "last_activity_at"]
    search_fields = ["key", "user_lo__account", "user_hi__account"]
    raw_id_fields = ["user_lo", "user_hi", "last_message"]
    inlines = [RoomMemberInline]


@admin.register(DirectMessage)
class DirectMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "seq", "sender", "created_at", "edited_at", "unsent_at"]
    list_filter = ["created_at"]
    search_fields = ["room__key", "sender__account"]
    raw_id_fields = ["room", "sender", "reply_to"]


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
