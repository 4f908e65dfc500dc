"""Instagram-style handles: the one definition of what an account may be."""

import re

ACCOUNT_MAX_LENGTH = 30
_ACCOUNT_RE = re.compile(r"^(?!\.)(?!.*\.\.)(?!.*\.$)[a-z0-9._]{1,30}$")
_PREFIX_RE = re.compile(r"^[a-z0-9._]{0,30}$")


def normalize_account(value: str) -> str:
    """Accounts are stored and compared lower-case."""
    return value.strip().lower()


def is_valid_account(value: str) -> bool:
    """1-30 of ``a-z 0-9 . _``, no leading or trailing dot, no ``..``."""
    return bool(_ACCOUNT_RE.match(value))


def is_account_prefix(value: str) -> bool:
    """Whether ``value`` could begin a handle: only its characters, at most its length."""
    return bool(_PREFIX_RE.match(value))
