"""Content filters: PII, degenerate repetition and wrong-language turns.

* ``pii`` finds emails, phone numbers, payment cards (Luhn-valid, known issuer prefix and
  length), IBANs (mod-97-valid, registered country length), IPv4/IPv6 addresses, API keys and
  tokens, and national ids (US SSN, UK NINO).  By default it *redacts* each match with a
  placeholder (``[EMAIL]``...) and keeps the record; with ``action: drop|quarantine`` it removes
  the record instead.  Reasons and details name the kinds and their counts, never a matched value
  (RELIABILITY.md §4: a ledger must not become a copy of the PII it filtered).
* ``repetition`` removes records whose assistant turns degenerate into loops: many duplicated
  word n-grams, repeated lines, or one character repeated on and on.
* ``language`` removes records with a turn confidently written in a language the data set is not
  meant to contain, with the offline ``lingua-language-detector`` (its models ship in the wheel).

Patterns are checked (checksums, valid octets, issuer tables) rather than matched loosely, so that
order numbers, dates and version strings in real data are not mistaken for PII; the tests measure
recall on planted values and false positives on clean real records.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

import harness
from harness.plugin.components import (
    ComponentConfig,
    Filter,
    FilterActionConfig,
    FilterOutcome,
    FilterResult,
    RunContext,
)
from harness.errors import ConfigError, MissingExtraError
from harness.lib.pii import PII_KINDS, PiiKind, count_detail, find_pii, redact_pii
from harness.types import Conversation, Message, Role
from harness.plugin.registry import Registrar

if TYPE_CHECKING:
    from lingua import LanguageDetector

ALL_ROLES: list[Role] = ["system", "user", "assistant"]

# ================================================================================== PII

class PiiConfig(ComponentConfig):
    """Unlike other filters' ``FilterActionConfig``, PII can also be redacted in place."""

    action: Literal["drop", "quarantine", "redact"] = Field(
        "redact",
        description="redact each match with a placeholder and keep the record, or drop or "
        "quarantine the whole record",
    )
    kinds: list[PiiKind] = Field(
        default_factory=lambda: list(PII_KINDS), min_length=1, description="what to look for"
    )
    roles: list[Role] = Field(
        default_factory=lambda: list(ALL_ROLES), min_length=1, description="turns to look in"
    )


class PiiFilter(Filter[PiiConfig]):
    name = "pii"
    description = (
        "redacts (or drops) emails, phones, payment cards, IBANs, IPs, API keys and national ids"
    )
    Config = PiiConfig

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        cfg = self.config
        roles = set(cfg.roles)
        outcome = FilterOutcome(self.name, cfg.action)
        for record in records:
            counts: Counter[str] = Counter()
            messages: list[Message] = []
            for message in record.messages:
                spans = find_pii(message.content, cfg.kinds) if message.role in roles else []
                counts.update(kind for kind, _, _ in spans)
                if spans:
                    message = replace(message, content=redact_pii(message.content, spans))
                messages.append(message)
            if not counts:
                outcome.keep(record)
            elif cfg.action == "redact":
                outcome.redact(replace(record, messages=tuple(messages)), sorted(counts))
            else:
                outcome.remove(record, "pii", count_detail(counts))
        return outcome.result()


# ============================================================================= repetition

_WORD = re.compile(r"\w+")


def duplicate_ngram_share(text: str, n: int) -> tuple[float, int]:
    """Share of word n-gram occurrences that repeat an earlier one, and the number of n-grams."""
    words = _WORD.findall(text.casefold())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1 - len(set(grams)) / len(grams), len(grams)


def duplicate_line_share(text: str) -> tuple[float, int]:
    """Share of non-blank lines that repeat an earlier line (spaces collapsed), and their count."""
    lines = [" ".join(line.split()).casefold() for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0, 0
    return 1 - len(set(lines)) / len(lines), len(lines)


def longest_char_run(text: str) -> tuple[int, str]:
    """Length and character of the longest run of one repeated non-space character."""
    best, best_char, run, prev = 0, "", 0, ""
    for char in text:
        run = run + 1 if char == prev else 1
        prev = char
        if run > best and not char.isspace():
            best, best_char = run, char
    return best, best_char


class RepetitionConfig(FilterActionConfig):
    ngram: int = Field(3, ge=1, le=10, description="word n-gram size")
    max_dup_ngram_share: float = Field(
        0.3, gt=0, le=1, description="flag a turn when more of its n-grams repeat an earlier one"
    )
    min_words: int = Field(
        40, ge=1, description="n-gram share is judged only on turns with at least this many words"
    )
    max_dup_line_share: float = Field(
        0.3, gt=0, le=1, description="flag a turn when more of its non-blank lines are repeats"
    )
    min_lines: int = Field(
        4, ge=2, description="line share is judged only on turns with at least this many lines"
    )
    max_char_run: int = Field(
        20, ge=2, description="flag a turn with a run of one character longer than this"
    )
    roles: list[Role] = Field(default_factory=lambda: list[Role](["assistant"]), min_length=1)


class RepetitionFilter(Filter[RepetitionConfig]):
    name = "repetition"
    description = "drops records whose assistant turns loop: repeated n-grams, lines or characters"
    Config = RepetitionConfig

    def findings(self, text: str) -> list[tuple[str, str]]:
        """``(reason, detail)`` of every limit ``text`` exceeds, most specific first."""
        cfg = self.config
        found: list[tuple[str, str]] = []
        share, lines = duplicate_line_share(text)
        if lines >= cfg.min_lines and share > cfg.max_dup_line_share:
            found.append(
                ("repeated_lines", f"repeated lines {share:.2f} > {cfg.max_dup_line_share:g}")
            )
        run, char = longest_char_run(text)
        if run > cfg.max_char_run:
            found.append(("char_run", f"run of {run} x {char!r} > {cfg.max_char_run}"))
        words = len(_WORD.findall(text))
        if words >= cfg.min_words:
            share, _ = duplicate_ngram_share(text, cfg.ngram)
            if share > cfg.max_dup_ngram_share:
                found.append(
                    (
                        "repeated_ngrams",
                        f"repeated {cfg.ngram}-grams {share:.2f} > {cfg.max_dup_ngram_share:g}",
                    )
                )
        return found

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        cfg = self.config
        outcome = FilterOutcome(self.name, cfg.action)
        for record in records:
            reason, details = "", []
            for index, message in enumerate(record.messages, start=1):
                if message.role not in cfg.roles:
                    continue
                found = self.findings(message.content)
                if found:
                    reason = reason or found[0][0]
                    details.append(
                        f"turn {index} ({message.role}): " + "; ".join(d for _, d in found)
                    )
            if reason:
                outcome.remove(record, reason, " | ".join(details))
            else:
                outcome.keep(record)
        return outcome.result()


# =============================================================================== language

DEFAULT_LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "ko", "ar", "hi", "tr", "pl",
)  # fmt: skip

_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")  # Bitext's {{Order Number}}
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_URL = re.compile(r"\b(?:https?://|www\.)\S+")


def _iso(code: str) -> str:
    return code.strip().lower()


@lru_cache(maxsize=8)
def language_detector(codes: tuple[str, ...]) -> LanguageDetector:
    """A lingua detector over exactly ``codes`` (ISO 639-1), built once per set of codes.

    Fewer languages make detection faster and more certain; models load lazily from the wheel."""
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError as exc:  # pragma: no cover - only without the dependency
        raise MissingExtraError(
            f"the language filter needs lingua: pip install lingua-language-detector ({exc})"
        ) from exc
    isos = []
    for code in codes:
        try:
            isos.append(IsoCode639_1.from_str(code))
        except ValueError:
            raise ConfigError(f"language filter: unknown ISO 639-1 code {code!r}") from None
    if len(isos) < 2:
        raise ConfigError("language filter: needs at least two languages to tell apart")
    return LanguageDetectorBuilder.from_iso_codes_639_1(*isos).build()


def judged_text(text: str, max_chars: int) -> str:
    """The prose of a turn: without code blocks, URLs and ``{{placeholders}}``, whitespace
    collapsed, cut to ``max_chars``."""
    text = _URL.sub(" ", _PLACEHOLDER.sub(" ", _CODE_BLOCK.sub(" ", text)))
    return " ".join(text.split())[:max_chars]


def detect_language(text: str, codes: Sequence[str]) -> tuple[str, float]:
    """The most likely language (ISO 639-1) of ``text`` among ``codes``, with its confidence."""
    detector = language_detector(tuple(sorted({_iso(c) for c in codes})))
    values = detector.compute_language_confidence_values(text)
    if not values:
        return "", 0.0
    best = values[0]
    return best.language.iso_code_639_1.name.lower(), best.value


class LanguageConfig(FilterActionConfig):
    expected: list[str] = Field(
        default_factory=lambda: ["en"], min_length=1, description="allowed languages (ISO 639-1)"
    )
    languages: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LANGUAGES),
        description="languages the detector tells apart (the expected ones are always added)",
    )
    roles: list[Role] = Field(default_factory=lambda: list[Role](["user", "assistant"]), min_length=1)
    min_chars: int = Field(20, ge=1, description="shorter turns (after cleaning) are not judged")
    max_chars: int = Field(
        1000, ge=20, description="only the first this many characters of a turn are judged"
    )
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="flag a turn only when the detector is at least this sure"
    )

    @field_validator("expected", "languages")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [_iso(v) for v in value]


class LanguageFilter(Filter[LanguageConfig]):
    name = "language"
    description = "drops records with a turn confidently in a language other than the expected ones"
    Config = LanguageConfig

    def __init__(self, config: LanguageConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.codes = tuple(sorted(set(config.languages) | set(config.expected)))
        language_detector(self.codes)  # fail on unknown codes at construction, not mid-run

    def wrong_turns(self, record: Conversation) -> list[str]:
        """``"turn 2 (assistant): de 0.97"`` for each turn confidently in an unexpected language."""
        cfg = self.config
        found = []
        for index, message in enumerate(record.messages, start=1):
            if message.role not in cfg.roles:
                continue
            text = judged_text(message.content, cfg.max_chars)
            if len(text) < cfg.min_chars:
                continue
            language, confidence = detect_language(text, self.codes)
            if language not in cfg.expected and confidence >= cfg.min_confidence:
                found.append(f"turn {index} ({message.role}): {language} {confidence:.2f}")
        return found

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        cfg = self.config
        outcome = FilterOutcome(self.name, cfg.action)
        for record in records:
            wrong = self.wrong_turns(record)
            if wrong:
                outcome.remove(record, "wrong_language", "; ".join(wrong))
            else:
                outcome.keep(record)
        return outcome.result()


@harness.hookimpl
def harness_register_filters(registrar: Registrar) -> None:
    registrar.add(PiiFilter)
    registrar.add(RepetitionFilter)
    registrar.add(LanguageFilter)
