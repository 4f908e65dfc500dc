"""Error reports (the DEBUG page, the mails to ADMINS) that show no credentials."""

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@ — the userinfo of a URL (the user may be empty: redis://:pw@).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+(?=@)", re.I)


def url_password_hidden(text: str, substitute: str) -> str:
    """``text`` with the password of every URL in it replaced by ``substitute``."""
    return _URL_PASSWORD.sub(lambda match: match["head"] + substitute, text)


class SecretsHiddenFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings named like ``KEY`` or ``PASSWORD``, also
    hiding the connection URLs (``DATABASE_URL``, ``REDIS_URL``, Sentry-style ``DSN``s)
    and the password inside any URL in any setting (``CHANNEL_LAYERS``' Redis hosts,
    ``DIRECT_MESSAGES["REDIS_URL"]``)."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|DATABASE_URL|REDIS_URL|DSN",
        flags=re.I,
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):  # lazy strings too: compare their text
            hidden = url_password_hidden(str(cleansed), self.cleansed_substitute)
            return cleansed if hidden == str(cleansed) else hidden
        return cleansed
