"""What the quality classifier looks at (``FEATURES``): the sentence embeddings of the
response's start and the prompt's end, cheap text features, and the response's similarity to the
prompt and the question; and the constants the classifier file format shares."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any


from harness.errors import require
from harness.types import Conversation

NAME = "quality_classifier"
FORMAT = "finetune-harness/quality-classifier"
VERSION = 1
EMBED_WORDS = 64
"""Words of the response and of the prompt that are embedded."""
EMBED_DIM = 384
MIN_PER_CLASS = 5
C = 1.0
EMBEDDING_WEIGHT = 0.3
"""Standardised embedding values are multiplied by this before the fit (see ``train_model``)."""
LABELS = ("good", "bad")

_MEMO_LIMIT = 20000
_memo: dict[str, Any] = {}


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(\S)")
_ENDS_WITH_PUNCTUATION = re.compile(r"[.!?:;)\]\"'’”`*>]\s*$")  # noqa: RUF001 (typographic quotes end sentences)
_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset(
    ["the", "and", "or", "but", "if", "of", "to", "in", "on", "for", "with", "at", "by", "from", "is", "are", "was", "were", "be", "been", "am", "you", "he", "she", "it", "we", "they", "my", "your", "me", "this", "that", "what", "how", "can", "do", "does", "did", "have", "has", "not", "no", "yes", "so", "as", "its", "our", "their", "there", "here", "would", "could", "should", "will", "just", "like", "about", "get", "any", "some", "all"]
)


def words_of(text: str) -> list[str]:
    return text.split()


def log_words(prompt: str, response: str) -> float:
    """``log(1 + words)``: very short answers are suspect, and length matters on a log scale."""
    return math.log1p(len(words_of(response)))


def non_alnum_share(prompt: str, response: str) -> float:
    """Share of the non-space characters that are neither letters nor digits."""
    chars = [c for c in response if not c.isspace()]
    return sum(not c.isalnum() for c in chars) / len(chars) if chars else 0.0


def repeated_line_share(prompt: str, response: str) -> float:
    """Share of the non-blank lines whose (whitespace-collapsed, case-folded) text is that of an
    earlier line."""
    seen: set[str] = set()
    lines = [" ".join(line.split()).casefold() for line in response.splitlines()]
    lines = [line for line in lines if line]
    repeats = 0
    for line in lines:
        repeats += line in seen
        seen.add(line)
    return repeats / len(lines) if lines else 0.0


def ends_with_punctuation(prompt: str, response: str) -> float:
    """1.0 when the response ends like a finished sentence or block (punctuation, a closing
    bracket or quote, a code fence), else 0.0: a cut-off answer usually does not."""
    return 1.0 if _ENDS_WITH_PUNCTUATION.search(response) else 0.0


def starts_like_a_sentence(prompt: str, response: str) -> float:
    """1.0 when the response starts with a capital letter or a non-letter (digit, markup)."""
    first = response.lstrip()[:1]
    return 1.0 if first and (first.isupper() or not first.isalpha()) else 0.0


def lowercase_after_sentence_end(prompt: str, response: str) -> float:
    """Share of sentence ends (``.``, ``!``, ``?``) followed by a word starting in lower case:
    natural text starts sentences with a capital, shuffled words mostly do not."""
    starts = [m.group(1) for m in _SENTENCE_END.finditer(response)]
    letters = [s for s in starts if s.isalpha()]
    return sum(s.islower() for s in letters) / len(letters) if letters else 0.0


def prompt_word_overlap(prompt: str, response: str) -> float:
    """Share of the content words of the prompt's last ``EMBED_WORDS`` words (three letters or
    more, not a stop word) that the response uses: an answer to another question shares few."""
    asked = {w for w in _WORD.findall(_last_words(prompt).casefold()) if len(w) > 2} - _STOPWORDS
    if not asked:
        return 0.0
    return len(asked & set(_WORD.findall(response.casefold()))) / len(asked)


CHEAP_FEATURES: dict[str, Callable[[str, str], float]] = {
    "log_words": log_words,
    "non_alnum_share": non_alnum_share,
    "repeated_line_share": repeated_line_share,
    "ends_with_punctuation": ends_with_punctuation,
    "starts_like_a_sentence": starts_like_a_sentence,
    "lowercase_after_sentence_end": lowercase_after_sentence_end,
    "prompt_word_overlap": prompt_word_overlap,
}
"""Cheap features, ``f(prompt, response) -> float``."""
FEATURES: tuple[str, ...] = (
    "response_embedding",
    "prompt_embedding",
    *CHEAP_FEATURES,
    "prompt_response_similarity",
    "last_user_response_similarity",
)
"""The feature blocks, in order; the two embeddings are ``EMBED_DIM`` values each."""


def feature_width(features: Sequence[str] = FEATURES) -> int:
    return sum(EMBED_DIM if name.endswith("_embedding") else 1 for name in features)


def prompt_and_response(record: Conversation) -> tuple[str, str]:
    """The record's final assistant turn (its *response*, "" when there is none) and its
    *prompt*: the user and assistant turns before it, one per line (a reply in a long chat
    answers the conversation, not only the last user line)."""
    messages = record.messages
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=len(messages))
    before = [m.content for m in messages[:last] if m.role != "system"]
    response = messages[last].content if last < len(messages) else ""
    return "\n".join(before), response


def _first_words(text: str) -> str:
    return " ".join(words_of(text)[:EMBED_WORDS])


def _last_words(text: str) -> str:
    return " ".join(words_of(text)[-EMBED_WORDS:])


def embed_texts(clipped: Sequence[str]) -> Any:
    """Normalised MiniLM embeddings of texts (float64, one row per text), memoised per
    process."""
    np = require("numpy")
    from harness.lib.embed import embed

    if not clipped:
        return np.zeros((0, EMBED_DIM))
    missing = sorted({t for t in clipped if t not in _memo}, key=len)  # less padding
    table: dict[str, Any] = {}
    if missing:
        table = {t: row.astype(np.float64) for t, row in zip(missing, embed(missing))}
    rows = np.vstack([_memo[t] if t in _memo else table[t] for t in clipped])
    if len(_memo) + len(table) > _MEMO_LIMIT:
        _memo.clear()
    if len(table) <= _MEMO_LIMIT:
        _memo.update(table)
    return rows


def last_user_turn(record: Conversation) -> str:
    """The last user turn before the final assistant turn ("" when there is none)."""
    messages = record.messages
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=len(messages))
    return next((m.content for m in reversed(messages[:last]) if m.role == "user"), "")


def features(records: Sequence[Conversation]) -> Any:
    """The raw (unstandardised) feature matrix of ``records``, ``FEATURES`` order, float64."""
    np = require("numpy")
    pairs = [prompt_and_response(r) for r in records]
    if not pairs:
        return np.zeros((0, feature_width()))
    n = len(pairs)
    texts = [_last_words(p) for p, _ in pairs] + [_first_words(r) for _, r in pairs]
    texts += [_last_words(last_user_turn(r)) for r in records]  # = the prompt when single-turn
    embedded = embed_texts(texts)
    prompts, responses, asks = embedded[:n], embedded[n : 2 * n], embedded[2 * n :]
    cheap = np.array(
        [[fn(prompt, response) for fn in CHEAP_FEATURES.values()] for prompt, response in pairs],
        dtype=np.float64,
    )
    similarity = np.sum(prompts * responses, axis=1, keepdims=True)
    ask_similarity = np.sum(asks * responses, axis=1, keepdims=True)
    return np.hstack([responses, prompts, cheap, similarity, ask_similarity])
