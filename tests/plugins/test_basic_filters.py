"""The built-in curation filters: exact_dedup and min_response_length."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.plugin.components import RunContext
from harness.types import Conversation, Dropped, Message
from harness_plugins.filters.basic import ExactDedup, MinResponseLength, normalise


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


def conv(source_id: str, user: str, assistant: str, system: str | None = None) -> Conversation:
    messages = ([Message("system", system)] if system else []) + [
        Message("user", user),
        Message("assistant", assistant),
    ]
    return Conversation(tuple(messages), source_id)


def ids(records) -> list[str]:
    return [r.source_id for r in records]


# ---------------------------------------------------------------------------- exact_dedup


@pytest.fixture
def dedup(ctx):
    return lambda **options: ExactDedup(ExactDedup.Config(**options), ctx)


def test_dedup_keeps_the_first_and_names_it(dedup):
    records = [
        conv("f:1", "Hi", "Hello"),
        conv("f:2", "Bye", "Goodbye"),
        conv("f:3", "Hi", "Hello"),
        conv("f:4", "Hi", "Hello"),
        conv("f:5", "Bye", "Goodbye"),
    ]
    result = dedup().apply(records)

    assert ids(result.kept) == ["f:1", "f:2"]
    assert result.dropped == [
        Dropped("f:3", "exact_dedup", "duplicate", "same as f:1"),
        Dropped("f:4", "exact_dedup", "duplicate", "same as f:1"),
        Dropped("f:5", "exact_dedup", "duplicate", "same as f:2"),
    ]


@pytest.mark.parametrize(
    "first, second",
    [
        (("Hi there", "Hello"), ("HI THERE", "hello")),  # case
        (("Hi there", "Hello"), ("  Hi \t\n there ", "Hello\n")),  # whitespace
        (("ﬁle the form", "Done"), ("file the form", "Done")),  # NFKC ligature
        (("Order ＡＢＣ１２３", "OK"), ("Order ABC123", "OK")),  # NFKC full-width
        (("Straße", "ja"), ("STRASSE", "JA")),  # case folding, not just lower()
    ],
)
def test_dedup_normalises_before_comparing(dedup, first, second):
    result = dedup().apply([conv("f:1", *first), conv("f:2", *second)])
    assert ids(result.kept) == ["f:1"]
    assert ids(result.dropped) == ["f:2"]


def test_dedup_distinct_text_is_kept(dedup):
    records = [conv("f:1", "Hi", "Hello"), conv("f:2", "Hi", "Hello!"), conv("f:3", "Hi!", "Hello")]
    result = dedup().apply(records)
    assert ids(result.kept) == ["f:1", "f:2", "f:3"]
    assert result.dropped == []


def test_dedup_role_matters_in_conversation_scope(dedup):
    swapped = Conversation((Message("assistant", "Hi"), Message("user", "Hello")), "f:2")
    result = dedup().apply([conv("f:1", "Hi", "Hello"), swapped])
    assert ids(result.kept) == ["f:1", "f:2"]


def test_dedup_prompt_scope_compares_only_user_turns(dedup):
    records = [
        conv("f:1", "Reset my password", "Go to settings."),
        conv("f:2", "reset my  password", "Click 'forgot password'.", system="Be terse."),
        conv("f:3", "Reset my email", "Go to settings."),
    ]
    by_conversation = dedup().apply(records)
    by_prompt = dedup(scope="prompt").apply(records)

    assert ids(by_conversation.kept) == ["f:1", "f:2", "f:3"]
    assert ids(by_prompt.kept) == ["f:1", "f:3"]
    assert by_prompt.dropped == [Dropped("f:2", "exact_dedup", "duplicate", "same as f:1")]


def test_dedup_rejects_unknown_scope():
    with pytest.raises(ValidationError):
        ExactDedup.Config(scope="response")


def test_normalise():
    assert normalise("  A\u00a0B\tC\n") == "a b c"
    assert normalise("ＡＢＣ") == "abc"


# -------------------------------------------------------------------- min_response_length


@pytest.fixture
def min_length(ctx):
    return lambda **options: MinResponseLength(MinResponseLength.Config(**options), ctx)


def test_min_response_length_reasons(min_length):
    records = [
        conv("f:1", "q", "fine answer"),
        conv("f:2", "q", ""),
        conv("f:3", "q", "   \n"),
        conv("f:4", "q", "ok"),
        conv("f:5", "q", " abc "),
    ]
    result = min_length(min_chars=3).apply(records)

    assert ids(result.kept) == ["f:1", "f:5"]  # surrounding whitespace does not count
    assert result.dropped == [
        Dropped("f:2", "min_response_length", "empty_response"),
        Dropped("f:3", "min_response_length", "empty_response"),
        Dropped("f:4", "min_response_length", "response_too_short", "2 < 3 characters"),
    ]


def test_min_response_length_default_drops_only_empty(min_length):
    result = min_length().apply([conv("f:1", "q", "k"), conv("f:2", "q", " ")])
    assert ids(result.kept) == ["f:1"]
    assert [d.reason for d in result.dropped] == ["empty_response"]


def test_min_response_length_checks_every_assistant_turn(min_length):
    multi = Conversation(
        (Message("user", "a"), Message("assistant", "long enough"), Message("user", "b"), Message("assistant", "no")),
        "f:1",
    )
    result = min_length(min_chars=3).apply([multi])
    assert result.kept == []
    assert [(d.source_id, d.reason) for d in result.dropped] == [("f:1", "response_too_short")]


def test_min_response_length_rejects_non_positive_minimum():
    with pytest.raises(ValidationError):
        MinResponseLength.Config(min_chars=0)
