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

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field, field_validator

import harness
from harness.plugin.components import (
    Filter,
    FilterActionConfig,
    FilterOutcome,
    FilterResult,
    RunContext,
)
from harness.errors import ConfigError, MissingExtraError
from harness.types import Conversation, Message, Role

if TYPE_CHECKING:
    from lingua import LanguageDetector

ALL_ROLES: list[Role] = ["system", "user", "assistant"]

# ================================================================================== PII

PiiKind = Literal["email", "phone", "credit_card", "iban", "ip", "api_key", "national_id"]
PII_KINDS: tuple[PiiKind, ...] = get_args(PiiKind)

PLACEHOLDERS: dict[PiiKind, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CREDIT_CARD]",
    "iban": "[IBAN]",
    "ip": "[IP]",
    "api_key": "[API_KEY]",
    "national_id": "[NATIONAL_ID]",
}

# Overlapping matches are resolved in this order: the more specific pattern wins (a token may
# contain digits that look like a card, a SSN starting with 0 looks like a national phone).
_PRIORITY: tuple[PiiKind, ...] = (
    "api_key",
    "email",
    "iban",
    "credit_card",
    "national_id",
    "ip",
    "phone",
)

Span = tuple[PiiKind, int, int]

# Patterns begin with a character (never with a look-behind, which would make ``re`` try every
# position); the character before a match is checked by ``_bounded`` instead.
_EMAIL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

# Phones need a "+" prefix or the separators of a typical grouping, so that bare order numbers,
# dates (2023-01-15, 01/02/2023) and amounts are not phones.
_PHONE_INTL = re.compile(r"\+\d{1,4}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,10})){1,6}(?![\w-]|[.-]\d)")
_PHONE_NANP = re.compile(  # (415) 555-0132, 415-555-0132, 415.555.0132, 1-415-555-0132
    r"(?:1[ .-])?(?:\([2-9]\d{2}\)[ .-]?[2-9]\d{2}[ .-]\d{4}"
    r"|[2-9]\d{2}(?P<s>[ .-])[2-9]\d{2}(?P=s)\d{4})(?![\w-]|[.-]\d)"
)
_PHONE_TRUNK = re.compile(  # trunk prefix 0, then groups: 020 7946 0958, 07700 900123
    r"\(?0[1-9]\d{0,3}\)?(?:[ -]\d{2,8}){1,4}(?![\w-]|[.-]\d)"
)
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")

# 13-19 digits, bare or grouped 4-4-4-4(-3) / 4-6-5 (Amex) / 4-6-4 (Diners) with one separator.
_CARD = re.compile(
    r"(?:\d{13,19}"
    r"|\d{4}(?P<a>[ -])\d{4}(?P=a)\d{4}(?P=a)\d{1,4}(?:(?P=a)\d{1,3})?"
    r"|\d{4}(?P<b>[ -])\d{6}(?P=b)\d{4,5})(?![\w-]|[.,]\d)"
)

_IBAN_START = re.compile(r"([A-Z]{2})(\d{2})(?=[ ]?[A-Z0-9])")
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
"""IBAN length per country (SWIFT IBAN registry)."""

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])")

_VERSION_BEFORE = re.compile(r"(?:version|release|ver\.?|build)\s*$", re.IGNORECASE)
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{1,4}:")

_API_KEYS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # (literals one of which every match contains, so that most texts skip the pattern; pattern)
    (("sk-",), re.compile(r"sk-(?:[A-Za-z]{2,8}-)?[A-Za-z0-9_-]{20,}")),  # OpenAI, Anthropic
    (("k_live_", "k_test_"), re.compile(r"[spr]k_(?:live|test)_[A-Za-z0-9]{16,}")),  # Stripe
    (("gh",), re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}")),  # GitHub
    (("github_pat_",), re.compile(r"github_pat_[A-Za-z0-9_]{40,}")),
    (("AKIA", "ASIA"), re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])")),  # AWS key id
    (("xox",), re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}")),  # Slack
    (("AIza",), re.compile(r"AIza[0-9A-Za-z_-]{35}")),  # Google API key
    (("hf_",), re.compile(r"hf_[A-Za-z0-9]{30,}")),  # Hugging Face
    (("glpat-",), re.compile(r"glpat-[A-Za-z0-9_-]{20,}")),  # GitLab
    (
        ("eyJ",),
        re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"),
    ),  # JWT
)
_BEARER = re.compile(r"\bbearer\s+([A-Za-z0-9._~+/-]{20,}=*)", re.IGNORECASE)
_LETTER_AND_DIGIT = re.compile(r"(?=.*\d)(?=.*[A-Za-z])")
"""A secret mixes letters and digits; "sk-the-quick-brown-fox-jumps" is prose."""

_SSN = re.compile(r"(\d{3})-(\d{2})-(\d{4})(?![\w-]|[.,]\d)")
_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z](?P<s> ?)\d{2}(?P=s)\d{2}(?P=s)\d{2}(?P=s)[A-D]"
    r"(?![A-Za-z0-9])"
)
_NINO_BAD_PREFIXES = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


_DIGIT = re.compile(r"[0-9]")


def _bounded(pattern: re.Pattern[str], text: str, also: str = "") -> Iterator[re.Match[str]]:
    """Matches of ``pattern`` not preceded by a letter, digit, ``_`` or a character of ``also``."""
    for m in pattern.finditer(text):
        start = m.start()
        if start:
            before = text[start - 1]
            if before.isalnum() or before == "_" or before in also:
                continue
        yield m


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_issuer_ok(digits: str) -> bool:
    """Whether the number starts with a known issuer prefix (IIN) and has that issuer's length."""
    n, p2, p3, p4 = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:  # Diners Club
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:  # Discover
        return 16 <= n <= 19
    if p2 == 62:  # UnionPay
        return 16 <= n <= 19
    if p2 == 50 or 56 <= p2 <= 69:  # Maestro
        return 12 <= n <= 19
    return False


def iban_valid(compact: str) -> bool:
    """ISO 13616: registered country length and ``mod 97 == 1`` of the rearranged number."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" in text:
        for m in _bounded(_EMAIL, text, ".%+-"):
            yield m.span()


def _phones(text: str) -> Iterator[tuple[int, int]]:
    if "+" in text:
        for m in _bounded(_PHONE_INTL, text, "+"):
            if 8 <= len(_digits(m.group())) <= 15:
                yield m.span()
    for m in _bounded(_PHONE_NANP, text, "+.-"):
        yield m.span()
    for m in _bounded(_PHONE_TRUNK, text, "+.-"):
        if 9 <= len(_digits(m.group())) <= 12 and not _SSN_SHAPE.fullmatch(m.group()):
            yield m.span()


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _bounded(_CARD, text, ".-"):
        digits = _digits(m.group())
        if 13 <= len(digits) <= 19 and _card_issuer_ok(digits) and luhn_valid(digits):
            yield m.span()


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    """IBANs printed compact or in groups separated by single spaces."""
    for m in _bounded(_IBAN_START, text):
        length = IBAN_LENGTHS.get(m.group(1))
        if length is None:
            continue
        chars, pos = [m.group(1), m.group(2)], m.end()
        count = 4
        while count < length and pos < len(text):
            char = text[pos]
            if char == " " and pos + 1 < len(text) and text[pos + 1].isalnum():
                pos += 1
                continue
            if not (char.isascii() and (char.isdigit() or char.isupper())):
                break
            chars.append(char)
            count += 1
            pos += 1
        ends_here = not (pos < len(text) and text[pos].isalnum())
        if count == length and ends_here and iban_valid("".join(chars)):
            yield m.start(), pos


def _identifies_nobody(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, unspecified, and netmasks like 255.255.255.0: addresses of no one."""
    if address.is_loopback or address.is_unspecified:
        return True
    if isinstance(address, ipaddress.IPv4Address):
        bits = format(int(address), "032b")
        return bits.startswith("1") and "01" not in bits  # a contiguous netmask
    return False


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for m in _bounded(_IPV4, text, "."):
        if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            continue  # "version 1.2.3.4"
        if not _identifies_nobody(ipaddress.IPv4Address(m.group())):
            yield m.span()
    if "::" not in text and not _IPV6_HINT.search(text):
        return
    for m in _bounded(_IPV6, text, ":."):
        candidate = m.group()
        if len([g for g in candidate.split(":") if g]) < 3:  # "a::b", times like 12:30:45 fail
            continue
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        if not _identifies_nobody(address):
            yield m.span()


def _api_keys(text: str) -> Iterator[tuple[int, int]]:
    for literals, pattern in _API_KEYS:
        if any(literal in text for literal in literals):
            for m in _bounded(pattern, text, "-"):
                if _LETTER_AND_DIGIT.match(m.group()):
                    yield m.span()
    if "earer" in text or "EARER" in text:
        for m in _BEARER.finditer(text):
            if _LETTER_AND_DIGIT.match(m.group(1)):
                yield m.span(1)


def _national_ids(text: str) -> Iterator[tuple[int, int]]:
    for m in _bounded(_SSN, text, "-"):
        area, group, serial = m.groups()
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            yield m.span()
    for m in _bounded(_NINO, text):
        if m.group()[:2] not in _NINO_BAD_PREFIXES:
            yield m.span()


_FINDERS: dict[PiiKind, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": _emails,
    "phone": _phones,
    "credit_card": _cards,
    "iban": _ibans,
    "ip": _ips,
    "api_key": _api_keys,
    "national_id": _national_ids,
}


def find_pii(text: str, kinds: Sequence[str] = PII_KINDS) -> list[Span]:
    """Non-overlapping ``(kind, start, end)`` of the PII in ``text``, in text order.

    Where matches of different kinds overlap, the more specific kind wins (api_key, email, iban,
    credit_card, national_id, ip, phone); within a kind, the earlier and then longer match."""
    unknown = set(kinds) - set(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; known: {list(PII_KINDS)}")
    taken: list[Span] = []
    digit_free = _DIGIT.search(text) is None
    for kind in _PRIORITY:
        if kind not in kinds or (digit_free and kind != "email"):
            continue  # every kind but email has digits: most texts skip the digit patterns
        spans = sorted(set(_FINDERS[kind](text)), key=lambda s: (s[0], -s[1]))
        for start, end in spans:
            if all(end <= s or start >= e for _, s, e in taken):
                taken.append((kind, start, end))
    return sorted(taken, key=lambda s: s[1])


def redact_pii(text: str, spans: Sequence[Span]) -> str:
    """``text`` with each span replaced by its kind's placeholder."""
    out, last = [], 0
    for kind, start, end in sorted(spans, key=lambda s: s[1]):
        out += [text[last:start], PLACEHOLDERS[kind]]
        last = end
    out.append(text[last:])
    return "".join(out)


def count_detail(counts: Counter[str]) -> str:
    """``"email x2, phone x1"``: kinds and counts in a stable order, never the values."""
    order = {kind: i for i, kind in enumerate(PII_KINDS)}
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: order[kv[0]]))


class PiiConfig(FilterActionConfig):
    action: Literal["drop", "quarantine", "redact"] = Field(  # type: ignore[assignment]
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


class PiiFilter(Filter):
    name = "pii"
    description = (
        "redacts (or drops) emails, phones, payment cards, IBANs, IPs, API keys and national ids"
    )
    Config = PiiConfig

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        cfg: PiiConfig = self.config  # type: ignore[assignment]
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
    roles: list[Role] = Field(default_factory=lambda: ["assistant"], min_length=1)


class RepetitionFilter(Filter):
    name = "repetition"
    description = "drops records whose assistant turns loop: repeated n-grams, lines or characters"
    Config = RepetitionConfig

    def findings(self, text: str) -> list[tuple[str, str]]:
        """``(reason, detail)`` of every limit ``text`` exceeds, most specific first."""
        cfg: RepetitionConfig = self.config  # type: ignore[assignment]
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
        cfg: RepetitionConfig = self.config  # type: ignore[assignment]
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
    roles: list[Role] = Field(default_factory=lambda: ["user", "assistant"], min_length=1)
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


class LanguageFilter(Filter):
    name = "language"
    description = "drops records with a turn confidently in a language other than the expected ones"
    Config = LanguageConfig

    def __init__(self, config: LanguageConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.codes = tuple(sorted(set(config.languages) | set(config.expected)))
        language_detector(self.codes)  # fail on unknown codes at construction, not mid-run

    def wrong_turns(self, record: Conversation) -> list[str]:
        """``"turn 2 (assistant): de 0.97"`` for each turn confidently in an unexpected language."""
        cfg: LanguageConfig = self.config  # type: ignore[assignment]
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
        cfg: LanguageConfig = self.config  # type: ignore[assignment]
        outcome = FilterOutcome(self.name, cfg.action)
        for record in records:
            wrong = self.wrong_turns(record)
            if wrong:
                outcome.remove(record, "wrong_language", "; ".join(wrong))
            else:
                outcome.keep(record)
        return outcome.result()


@harness.hookimpl
def harness_register_filters(registrar) -> None:
    registrar.add(PiiFilter)
    registrar.add(RepetitionFilter)
    registrar.add(LanguageFilter)
