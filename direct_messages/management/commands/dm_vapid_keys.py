"""``manage.py dm_vapid_keys``: a new VAPID key pair for Web Push."""

from typing import Any

from django.core.management.base import BaseCommand

from direct_messages.push import vapid_keys_generate


class Command(BaseCommand):
    help = (
        "Print a new VAPID key pair (RFC 8292, P-256) for Web Push: set the private key as "
        'DIRECT_MESSAGES["VAPID_PRIVATE_KEY"] (the demo host reads VAPID_PRIVATE_KEY from '
        "the environment), the same on every process. Browsers get the public key from "
        "GET /api/push/vapid-public-key. A new key invalidates every subscription."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        private, public = vapid_keys_generate()
        self.stdout.write(f"VAPID_PRIVATE_KEY={private}\nVAPID_PUBLIC_KEY={public}")
