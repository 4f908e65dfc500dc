from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from direct_messages import moderation
from direct_messages.models import (
    Block,
    DirectMessage,
    DirectMessageAttachFiles,
    Reaction,
    Report,
    ReportedMessage,
    ReportStatus,
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


# --- The moderation queue ----------------------------------------------------------------


class ReportedMessageInline(admin.TabularInline):
    """The report's copy of the conversation: the picked messages and their context."""

    model = ReportedMessage
    extra = 0
    can_delete = False
    fields = readonly_fields = ("seq", "sender", "created_at", "picked", "unsent", "text", "files")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="files")
    def files(self, row: ReportedMessage) -> str:
        return format_html_join(
            " ",
            '<a href="{}">{}</a>',
            ((default_storage.url(f["file"]), f["kind"]) for f in row.attachments),
        )


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """Open reports first; each action is recorded in the report's history (the admin's
    ``LogEntry``: who, when, what)."""

    list_display = ["id", "created_at", "reason", "reporter", "reported", "status", "resolved_by"]
    list_filter = ["status", "reason"]
    ordering = ["-created_at"]
    readonly_fields = [
        "reporter", "reported", "room", "reason", "note", "status", "created_at",
        "resolved_by", "resolved_at",
    ]  # fmt: skip
    inlines = [ReportedMessageInline]
    actions = ["dismiss", "remove_messages", "suspend_reported"]

    def get_search_fields(self, request: HttpRequest) -> Any:
        return [_username("reporter"), _username("reported")]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def _act(self, request: HttpRequest, reports: QuerySet[Report], what: str, act: Any) -> None:
        done = 0
        for report in reports.filter(status=ReportStatus.OPEN).select_related("reported"):
            detail = act(report, request.user)
            self.log_change(request, report, what + (f": {detail}" if detail else ""))
            done += 1
        self.message_user(request, f"{what}: {done} report(s)", messages.SUCCESS)

    @admin.action(description="Dismiss", permissions=["change"])
    def dismiss(self, request: HttpRequest, reports: QuerySet[Report]) -> None:
        self._act(request, reports, "Dismissed", moderation.report_dismiss)

    @admin.action(description="Delete the reported messages for both", permissions=["change"])
    def remove_messages(self, request: HttpRequest, reports: QuerySet[Report]) -> None:
        def remove(report: Report, moderator: Any) -> str:
            return f"{moderation.report_remove_messages(report, moderator)} message(s) removed"

        self._act(request, reports, "Deleted the reported messages", remove)

    @admin.action(description="Suspend the reported user", permissions=["change"])
    def suspend_reported(self, request: HttpRequest, reports: QuerySet[Report]) -> None:
        self._act(request, reports, "Suspended the reported user", moderation.report_suspend)
