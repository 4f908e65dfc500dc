"""Signals for the host project (notifications, analytics).

``message_sent(sender=DirectMessage, message=...)`` is sent once per stored message,
after its transaction has committed, never for a retry.
"""

from django.dispatch import Signal

message_sent = Signal()
