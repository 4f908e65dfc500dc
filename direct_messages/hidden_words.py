"""Hidden words (Instagram's request filter): whether a message's text holds one of a
user's words or phrases, and what such a list may hold. Pure: no I/O.

Matching is on the text as Unicode's caseless matching has it (NFKC, casefold, NFKC
again: "STRASSE" is "straße", full-width letters are ASCII ones, a decomposed é is a
composed one), and on whole words: "spam" is not found in "spammer" nor "ass" in
"class". A phrase matches whatever whitespace separates its words in the text. The
word boundary applies only at an end of the entry that is a letter or digit (an emoji
matches next to anything) and not in a script written without spaces between words
(Chinese, Japanese, Thai, ...), where any occurrence matches. Accents are not folded
away: "cafe" and "café" are different words.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from direct_messages.errors import Invalid

HIDDEN_WORDS_MAX = 200  # entries in one user's list
HIDDEN_WORD_MAX_LENGTH = 100  # characters of one entry, once trimmed

# Scripts whose words are not separated by spaces: a boundary means nothing there.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)


def normalise(text: str) -> str:
    """``text`` for caseless comparison (Unicode's NFKC_Casefold, near enough)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _bounded(char: str) -> bool:
    return bool(re.match(r"\w", char)) and not _UNSPACED.match(char)


def _pattern_part(entry: str) -> str | None:
    words = normalise(entry).split()
    if not words:
        return None
    body = r"\s+".join(re.escape(word) for word in words)
    before = r"(?<!\w)" if _bounded(words[0][0]) else ""
    after = r"(?!\w)" if _bounded(words[-1][-1]) else ""
    return before + body + after


@functools.lru_cache(maxsize=256)
def _pattern(entries: tuple[str, ...]) -> re.Pattern[str] | None:
    parts = [part for part in map(_pattern_part, entries) if part is not None]
    return re.compile("|".join(parts)) if parts else None


def text_matches(text: str, words: Iterable[str]) -> bool:
    """Whether ``text`` holds one of ``words`` (entries as :func:`hidden_words_clean`
    keeps them, or a host's list), as the module's docstring says."""
    pattern = _pattern(tuple(words))
    return bool(text) and pattern is not None and pattern.search(normalise(text)) is not None


def hidden_words_clean(words: list[str]) -> list[str]:
    """A user's list as it is stored: each entry trimmed, its inner whitespace one
    space, duplicates (caselessly) dropped, the first spelling kept, in order. Invalid
    if an entry is empty, too long or holds a control character, or if there are more
    than ``HIDDEN_WORDS_MAX`` entries left."""
    cleaned: dict[str, str] = {}
    for index, word in enumerate(words):
        entry = " ".join(word.split())
        if not entry:
            raise Invalid(f"hidden_words[{index}]: must not be empty")
        if len(entry) > HIDDEN_WORD_MAX_LENGTH:
            raise Invalid(f"hidden_words[{index}]: at most {HIDDEN_WORD_MAX_LENGTH} characters")
        if any(unicodedata.category(char) == "Cc" for char in entry):
            raise Invalid(f"hidden_words[{index}]: no control characters")
        cleaned.setdefault(normalise(entry), entry)
    if len(cleaned) > HIDDEN_WORDS_MAX:
        raise Invalid(f"hidden_words: at most {HIDDEN_WORDS_MAX} words or phrases")
    return list(cleaned.values())
