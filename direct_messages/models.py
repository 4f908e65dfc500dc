import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

User = settings.AUTH_USER_MODEL

# A send writes a message row and new versions of its room and both member rows, and
# each row version takes an entry in every index of its table (migration 0006): these
# tables keep no index that another one covers, and no index on a column only a send
# changes, so that the room's new version is a HOT update.


class Room(models.Model):
    """The one conversation of a pair of users, created by its first message."""

    key = models.CharField(max_length=64, unique=True)
    # Indexed by room_pair_unique, which leads with it. Null once that user is erased
    # (erasure.py): the other side keeps the conversation.
    user_lo = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    user_hi = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    last_seq = models.PositiveBigIntegerField(default=0)
    # The latest message not unsent, for the inbox; moved by every send, so neither
    # indexed nor checked at commit. Messages are only deleted with their room; a
    # pointer left dangling otherwise reads as no message.
    last_message = models.ForeignKey(
        "DirectMessage",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    last_activity_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(user_lo__lt=F("user_hi")), name="room_lo_lt_hi"),
            models.UniqueConstraint(fields=["user_lo", "user_hi"], name="room_pair_unique"),
        ]

    def __str__(self) -> str:
        return self.key


class RoomMember(models.Model):
    """One user's side of a room: read cursor, unread count, folder and settings."""

    # The room is indexed by member_room_user_unique; the other user is the room's other
    # member, null once they are erased (erasure.py), which needs no index or constraint.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members", db_index=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="dm_memberships")
    other = models.ForeignKey(
        User,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    last_read_seq = models.PositiveBigIntegerField(default=0)
    unread_count = models.PositiveIntegerField(default=0)
    muted = models.BooleanField(default=False)
    is_request = models.BooleanField(default=False)
    cleared_seq = models.PositiveBigIntegerField(default=0)
    # Copied from the room so that the inbox is one index range scan on this table.
    last_activity_at = models.DateTimeField(default=timezone.now)
    # False while everything in the room is at or below cleared_seq (delete-for-me).
    visible = models.BooleanField(default=True)
    # Whether the other side learns where this user has read (``seen``, ``room.joined``'s
    # ``read``): True or False for this conversation, None to follow the user's
    # ``UserSettings.read_receipts``. Read through ``selectors.read_receipts_on``.
    read_receipts = models.BooleanField(null=True, blank=True, default=None)
    # A request whose text held one of the user's hidden words: in the hidden folder,
    # announced and notified to nobody. Only ever true with is_request.
    hidden = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="member_room_user_unique"),
        ]
        # Partial indexes that match the inbox query exactly, one per folder: SQLite
        # cannot use the boolean columns of a composite index to avoid a sort.
        indexes = [
            models.Index(
                fields=["user", "-last_activity_at", "-id"],
                condition=Q(visible=True, is_request=False),
                name="member_inbox_primary_idx",
            ),
            models.Index(
                fields=["user", "-last_activity_at", "-id"],
                condition=Q(visible=True, is_request=True, hidden=False),
                name="member_inbox_requests_idx",
            ),
            models.Index(
                fields=["user", "-last_activity_at", "-id"],
                condition=Q(visible=True, is_request=True, hidden=True),
                name="member_inbox_hidden_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.room_id}"


class DirectMessage(models.Model):
    # Room and sender are indexed by the unique constraints that lead with them; replies
    # by a partial index that a message without one never enters.
    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    # Null: a tombstone of an erased user's message (erasure.py).
    sender = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    message = models.TextField(blank=True)
    client_id = models.UUIDField()
    created_at = models.DateTimeField(default=timezone.now)
    reply_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    edited_at = models.DateTimeField(null=True, blank=True)
    unsent_at = models.DateTimeField(null=True, blank=True)
    # A view-once photo or video: how many times its recipient may open it (1 or 2), and
    # how many times they have. Its file is deleted from storage at the last opening.
    view_once = models.PositiveSmallIntegerField(null=True, blank=True)
    views = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_unique"),
            models.UniqueConstraint(
                fields=["sender", "client_id"], name="message_sender_client_id_unique"
            ),
        ]
        indexes = [
            models.Index(
                fields=["reply_to"],
                condition=Q(reply_to__isnull=False),
                name="message_reply_to_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq}"

    @property
    def unsent(self) -> bool:
        return self.unsent_at is not None

    @property
    def opened(self) -> bool:
        """A view-once message its recipient has opened as often as they may."""
        return self.view_once is not None and self.views >= self.view_once


class AttachmentKind(models.TextChoices):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


class DirectMessageAttachFiles(models.Model):
    """An uploaded file: owned by its uploader until a message claims it."""

    message = models.ForeignKey(  # indexed by attachment_message_idx
        DirectMessage,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="attachments",
        db_index=False,
    )
    uploader = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    file = models.FileField(upload_to="dm/%Y/%m/", max_length=255)
    thumbnail = models.FileField(upload_to="dm/%Y/%m/", max_length=255, blank=True)
    kind = models.CharField(max_length=8, choices=AttachmentKind.choices)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "attachment"
        indexes = [
            models.Index(fields=["message", "id"], name="attachment_message_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk}"


class Reaction(models.Model):
    message = models.ForeignKey(DirectMessage, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message", "user"], name="reaction_message_user_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.emoji} on {self.message_id}"


class Block(models.Model):
    blocker = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    blocked = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_pair_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocks {self.blocked_id}"


class SendWindow(models.Model):
    """The send rate limit's sliding window for one user: the times (Unix seconds,
    oldest first) of their latest accepted sends, at least the limit's worth of those
    still inside the window. A send locks this row, refuses when the limit-th newest
    time is still inside the window, and appends to it only when the message is stored,
    in the message's own transaction (``ratelimit.send_window_take``). Every user has
    one: migration 0008 made them for the users before it, and a new user gets theirs
    on creation (``ratelimit.send_window_create``)."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    recent = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"send window of {self.user_id}"


class UserActivity(models.Model):
    """When a user was last seen by the app (their last socket closed or opened):
    kept here, not on the host's user model, which the app does not own."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    last_active_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "user activity"

    def __str__(self) -> str:
        return f"activity of {self.user_id}"


class UserTokens(models.Model):
    """What revokes a user's Bearer tokens: ``version`` (a token carries the version it
    was signed at; "log out everywhere" moves it on) and ``revoked``, the ``[jti, exp]``
    of single tokens logged out before they expire (expired ones are dropped)."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField(default=0)
    revoked = models.JSONField(default=list)

    class Meta:
        verbose_name_plural = "user tokens"

    def __str__(self) -> str:
        return f"tokens of {self.user_id}"


class ReportReason(models.TextChoices):
    SPAM = "spam"
    HARASSMENT = "harassment"
    NUDITY = "nudity"
    VIOLENCE = "violence"
    SCAM = "scam"
    OTHER = "other"


class ReportStatus(models.TextChoices):
    OPEN = "open"
    DISMISSED = "dismissed"
    ACTIONED = "actioned"


class Report(models.Model):
    """A participant's report of messages of a conversation, or of the whole of it.

    What was reported is copied into :class:`ReportedMessage` rows when the report is
    made, so that an unsend, a clear or a deletion afterwards hides nothing from the
    moderators. Their actions are in the admin's history (``LogEntry``)."""

    reporter = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    reported = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=16, choices=ReportReason.choices)
    note = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=ReportStatus.choices, default=ReportStatus.OPEN
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="report_queue_idx")]

    def __str__(self) -> str:
        return f"report {self.pk} ({self.reason})"


class ReportedMessage(models.Model):
    """A message as it was when it was reported: the picked ones (``picked``) and the
    messages around them, the context a moderator reads. Attachments of picked
    messages are copied (``attachments``: their stored names and kinds)."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="messages")
    message = models.ForeignKey(
        DirectMessage, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    seq = models.PositiveBigIntegerField()
    sender = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField(blank=True)
    created_at = models.DateTimeField()
    unsent = models.BooleanField(default=False)
    picked = models.BooleanField(default=False)
    attachments = models.JSONField(default=list)

    class Meta:
        ordering = ["report", "seq"]

    def __str__(self) -> str:
        return f"#{self.seq} of report {self.report_id}"


class ExportStatus(models.TextChoices):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class DataExport(models.Model):
    """A user's copy of their data, built in the background (``exports.export_build``):
    one zip in the default storage, downloadable by them until ``expires_at``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(
        max_length=8, choices=ExportStatus.choices, default=ExportStatus.PENDING
    )
    file = models.FileField(upload_to="dm/exports/", max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)  # by whoever builds it
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"export {self.pk} of {self.user_id} ({self.status})"


class UserSettings(models.Model):
    """A user's own settings for the app (the host's user model is not the app's to
    extend). No row means every default."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    # Notifications show the text of a message (or "Photo", ...); off: the sender only.
    previews = models.BooleanField(default=True)
    # The other side of each conversation learns where this user has read, unless the
    # conversation says otherwise (``RoomMember.read_receipts``).
    read_receipts = models.BooleanField(default=True)
    # Words and phrases that send a message request to the hidden folder, as
    # hidden_words.hidden_words_clean keeps them (the host's HIDDEN_WORDS apply too).
    hidden_words = models.JSONField(default=list)

    class Meta:
        verbose_name_plural = "user settings"

    def __str__(self) -> str:
        return f"settings of {self.user_id}"


class PushSubscription(models.Model):
    """A browser's Web Push subscription (RFC 8030): where to POST and the keys to
    encrypt for (RFC 8291). The endpoint is unique: a browser re-subscribing, or
    another user logging in on it, takes the row over."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    endpoint = models.URLField(max_length=1000, unique=True)
    p256dh = models.CharField(max_length=100)
    auth = models.CharField(max_length=50)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"push subscription {self.pk} of {self.user_id}"


class PushDevice(models.Model):
    """A mobile app's registration token: FCM (Android, or any app on Firebase) or APNs
    (iOS, straight to Apple). The (platform, token) pair is unique: an app registering
    again, or another user logging in on the same phone, takes the row over."""

    class Platform(models.TextChoices):
        FCM = "fcm", "FCM"
        APNS = "apns", "APNs"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    platform = models.CharField(max_length=4, choices=Platform.choices)
    token = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["platform", "token"], name="push_device_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.platform} device {self.pk} of {self.user_id}"


class PushDelivery(models.Model):
    """One message's notification to one subscription: the idempotency key of a push.

    The row is inserted (or moved from ``retry``) to ``sending`` before the push goes
    out, under the unique constraint: a task that runs twice, or two workers running
    one, cannot both claim it, so none is sent twice. A push service that fails for a
    while moves it to ``retry`` for the next attempt to claim. A claim is a lease: a
    worker that died mid-push leaves it ``sending``, and after ``PUSH_CLAIM_SECONDS``
    another run may claim it again (the push may then arrive twice if the dead worker
    had sent it, and the second replaces the first: they share the conversation's tag)."""

    class State(models.TextChoices):
        SENDING = "sending"
        RETRY = "retry"
        SENT = "sent"
        GAVE_UP = "gave_up"

    message = models.ForeignKey(DirectMessage, on_delete=models.CASCADE, related_name="+")
    # Exactly one of the two: a browser's subscription or a mobile app's device.
    subscription = models.ForeignKey(
        PushSubscription, on_delete=models.CASCADE, related_name="+", db_index=False, null=True
    )
    device = models.ForeignKey(
        PushDevice, on_delete=models.CASCADE, related_name="+", db_index=False, null=True
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.SENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "push deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["message", "subscription"], name="push_delivery_unique"
            ),
            models.UniqueConstraint(
                fields=["message", "device"], name="push_delivery_device_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(subscription__isnull=True) ^ models.Q(device__isnull=True),
                name="push_delivery_one_target",
            ),
        ]

    def __str__(self) -> str:
        target = (
            f"subscription {self.subscription_id}"
            if self.subscription_id
            else (f"device {self.device_id}")
        )
        return f"push of {self.message_id} to {target}"


class ConversationWatch(models.Model):
    """A socket open on a conversation, kept where another process can see it.

    Without Redis, presence lives in the server process's memory, which the task worker
    (another process) cannot read; whether a user has the conversation open is what holds
    a notification back, so a socket of a user who has push subscriptions is also written
    here, refreshed with its heartbeat and expiring as presence does."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    room_key = models.CharField(max_length=64)
    conn = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "room_key"], name="watch_user_room_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} watching {self.room_key}"
