"""Hidden words (the request filter): what matches, and what a list may hold. Pure
functions: no database."""

import pytest

from direct_messages.errors import Invalid
from direct_messages.hidden_words import (
    HIDDEN_WORD_MAX_LENGTH,
    HIDDEN_WORDS_MAX,
    hidden_words_clean,
    text_matches,
)


@pytest.mark.parametrize(
    ("words", "text"),
    [
        (["spam"], "buy SPAM now"),
        (["spam"], "Spam."),
        (["spam"], "#spam!"),
        (["free money"], "FREE   money, today"),  # a phrase, whatever the spaces between
        (["free money"], "get free\nmoney"),
        (["straße"], "STRASSE"),  # casefold, not lower()
        (["strasse"], "Straße"),
        (["free"], "ｆｒｅｅ stuff"),  # full-width letters (NFKC)
        (["fine"], "all ﬁne"),  # a ligature (NFKC)
        (["café"], "CAFE\u0301 open"),  # decomposed é against a composed one
        (["спам"], "Купи СПАМ"),
        (["🍆"], "hi🍆"),  # a word of no letters matches next to anything
        (["垃圾"], "这是垃圾信息"),  # scripts written without spaces: no word boundary
        (["ugly", "spam"], "you are ugly"),
    ],
)
def test_matches(words, text):
    assert text_matches(text, words)


@pytest.mark.parametrize(
    ("words", "text"),
    [
        (["spam"], "spammer"),  # not a word's part
        (["ass"], "a class of passion"),
        (["spam"], "spam_bot"),
        (["spam"], "spam1"),
        (["free money"], "freemoney"),
        (["free money"], "free of money"),
        (["cafe"], "café"),  # accents are not folded away: another word
        ([], "anything"),
        (["spam"], ""),
    ],
)
def test_does_not_match(words, text):
    assert not text_matches(text, words)


def test_clean_trims_collapses_spaces_and_deduplicates_keeping_the_first_spelling():
    cleaned = hidden_words_clean(["  Spam ", "free \t  money", "SPAM", "spam", "Straße", "STRASSE"])
    assert cleaned == ["Spam", "free money", "Straße"]


def test_clean_keeps_an_empty_list():
    assert hidden_words_clean([]) == []


@pytest.mark.parametrize(
    "words",
    [
        [""],
        ["   "],
        ["ok", "\t\n"],
        ["x" * (HIDDEN_WORD_MAX_LENGTH + 1)],
        ["nul\x00here"],
        ["bell\x07"],
        [f"w{i}" for i in range(HIDDEN_WORDS_MAX + 1)],
    ],
)
def test_clean_refuses(words):
    with pytest.raises(Invalid) as raised:
        hidden_words_clean(words)
    assert raised.value.detail.startswith("hidden_words")


def test_clean_counts_after_deduplication_and_allows_the_longest():
    many = [f"w{i}" for i in range(HIDDEN_WORDS_MAX)] + ["W0"]
    assert len(hidden_words_clean(many)) == HIDDEN_WORDS_MAX
    assert hidden_words_clean([" " + "x" * HIDDEN_WORD_MAX_LENGTH + " "]) == [
        "x" * HIDDEN_WORD_MAX_LENGTH
    ]
