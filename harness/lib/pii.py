"""PII detection and redaction: emails, phone numbers, payment cards (Luhn-valid, known issuer
prefix and length), IBANs (mod-97-valid, registered country length), IPv4/IPv6 addresses, API keys
and tokens, and national ids (US SSN, UK NINO).

Patterns are checked (checksums, valid octets, issuer tables) rather than matched loosely, so that
order numbers, dates and version strings in real data are not mistaken for PII.  Shared by the
``pii`` filter, the curation report's redacted examples and the data flywheel.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, get_args

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
    order: dict[str, int] = {kind: i for i, kind in enumerate(PII_KINDS)}
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: order[kv[0]]))
