"""The content filters (pii, repetition, language) measured on real records.

Defects are planted into copies of real, clean Bitext and HH-RLHF records; each test measures
recall on the planted defects and the false-positive rate on clean real records, prints both
(``pytest -s`` shows them) and checks that every input comes out exactly once.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from pydantic import ValidationError

from harness.plugin.components import FilterResult, RunContext
from harness.lib.data import data_dir
from harness.errors import ConfigError
from harness.plugin.registry import Registrar, Registries
from harness.types import Conversation, Message
from harness_plugins.filters import content
from harness.lib.pii import PII_KINDS, PLACEHOLDERS, find_pii, iban_valid, luhn_valid
from harness_plugins.filters.content import LanguageFilter, PiiFilter, RepetitionFilter
from harness_plugins.readers.formats import CsvReader, ShareGPTReader

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
PER_KIND = 40  # planted defects of each kind (the brief asks for at least 20)
MIN_RECALL = 0.95
MAX_FP_RATE = 0.02


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    base = tmp_path_factory.mktemp("content")
    return RunContext(base, base / "work")


@pytest.fixture(scope="module")
def bitext(ctx) -> list[Conversation]:
    reader = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    return [r for r in reader.read(data_dir() / BITEXT, BITEXT) if isinstance(r, Conversation)]


@pytest.fixture(scope="module")
def hh(ctx) -> list[Conversation]:
    reader = ShareGPTReader(ShareGPTReader.Config(), ctx)
    return [r for r in reader.read(data_dir() / HH, HH) if isinstance(r, Conversation)]


@pytest.fixture(scope="module")
def clean_2000(bitext, hh) -> list[Conversation]:
    """1,000 Bitext and 1,000 HH-RLHF records, a seeded sample (the false-positive set)."""
    rng = random.Random(2000)
    return rng.sample(bitext, 1000) + rng.sample(hh, 1000)


def assert_ledger(records: Sequence[Conversation], result: FilterResult) -> None:
    """Every input exactly once in kept, dropped or quarantined."""
    out = (
        Counter(r.source_id for r in result.kept)
        + Counter(d.source_id for d in result.dropped)
        + Counter(q.source_id for q in result.quarantined)
    )
    assert out == Counter(r.source_id for r in records)
    assert len(result.kept) + len(result.dropped) + len(result.quarantined) == len(records)


def relabel(record: Conversation, suffix: str) -> Conversation:
    return replace(record, source_id=f"{record.source_id}#{suffix}")


def with_turn(record: Conversation, index: int, text: str) -> Conversation:
    messages = list(record.messages)
    messages[index] = replace(messages[index], content=text)
    return replace(record, messages=tuple(messages))


def report(name: str, value: float, detail: str = "") -> None:
    print(f"\n[content filters] {name}: {value:.4f} {detail}".rstrip())


# =================================================================================== PII
# Realistic generated values: checksums valid, formats as people write them.


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    chars = [rng.choice(alphabet) for _ in range(n)]
    chars[rng.randrange(n)] = rng.choice(string.digits)  # a secret mixes letters and digits
    letters = [c for c in alphabet if c.isalpha()]
    chars[(chars.index(next(c for c in chars if c.isdigit())) + 1) % n] = rng.choice(letters)
    return "".join(chars)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def luhn_complete(partial: str) -> str:
    """``partial`` plus the check digit that makes it Luhn-valid."""
    for check in string.digits:
        if luhn_valid(partial + check):
            return partial + check
    raise AssertionError("unreachable")


def gen_email(rng: random.Random) -> str:
    first = rng.choice(["anna", "john", "li.wei", "maria", "o.brien", "sam", "k_nguyen", "priya"])
    last = rng.choice(["smith", "garcia", "muller", "rossi", "tanaka", "dubois", "kowalski"])
    sep = rng.choice([".", "_", "", "-"])
    num = rng.choice(["", str(rng.randint(1, 99)), str(rng.randint(1970, 2005))])
    tag = rng.choice(["", "", "+orders"])
    domain = rng.choice(
        ["gmail.com", "outlook.com", "example.co.uk", "mail.de", "yahoo.fr", "acme-corp.io",
         "uni-heidelberg.de", "proton.me"]
    )  # fmt: skip
    return f"{first}{sep}{last}{num}{tag}@{domain}"


def gen_phone(rng: random.Random) -> str:
    def d(n: int) -> str:
        return _digits(rng, n)

    def nanp() -> str:
        return f"{rng.randint(2, 9)}{d(2)}"

    formats: list[Callable[[], str]] = [
        lambda: f"+1 {nanp()} {nanp()} {d(4)}",
        lambda: f"+1-{nanp()}-{nanp()}-{d(4)}",
        lambda: f"+44 20 {d(4)} {d(4)}",
        lambda: f"+44 7{d(3)} {d(6)}",
        lambda: f"+49 30 {d(8)}",
        lambda: f"+49 151 {d(4)} {d(4)}",
        lambda: f"+33 {rng.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"+91 {rng.randint(6, 9)}{d(4)} {d(5)}",
        lambda: f"+61 4{d(2)} {d(3)} {d(3)}",
        lambda: f"({nanp()}) {nanp()}-{d(4)}",
        lambda: f"{nanp()}-{nanp()}-{d(4)}",
        lambda: f"{nanp()}.{nanp()}.{d(4)}",
        lambda: f"020 {d(4)} {d(4)}",
        lambda: f"07{d(3)} {d(6)}",
        lambda: f"030 {d(8)}",
        lambda: f"0{rng.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"+{d(2)}{d(9)}".replace("+0", "+3"),
    ]
    return rng.choice(formats)()


CARD_BRANDS: list[tuple[str, int]] = [  # (issuer prefix, length)
    ("4", 16), ("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
    ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("36", 14), ("62", 16),
]  # fmt: skip


def gen_card(rng: random.Random) -> str:
    prefix, length = rng.choice(CARD_BRANDS)
    number = luhn_complete(prefix + _digits(rng, length - len(prefix) - 1))
    style = rng.choice(["compact", "space", "dash"])
    if style == "compact":
        return number
    sep = " " if style == "space" else "-"
    if length in (14, 15):  # Diners 4-6-4, Amex 4-6-5
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i : i + 4] for i in range(0, length, 4)]
    return sep.join(groups)


IBAN_BBAN: dict[str, Callable[[random.Random], str]] = {
    "DE": lambda r: _digits(r, 18),
    "GB": lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 14),
    "FR": lambda r: _digits(r, 23),
    "ES": lambda r: _digits(r, 20),
    "NL": lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 10),
    "IT": lambda r: r.choice(string.ascii_uppercase) + _digits(r, 22),
    "BE": lambda r: _digits(r, 12),
    "CH": lambda r: _digits(r, 17),
    "AT": lambda r: _digits(r, 16),
    "PL": lambda r: _digits(r, 24),
}


def iban_from(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def gen_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_BBAN))
    compact = iban_from(country, IBAN_BBAN[country](rng))
    assert iban_valid(compact)
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        first = rng.choice([n for n in range(1, 224) if n not in (10, 127)])
        return ".".join(
            str(o) for o in (first, rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
        )
    groups = [rng.randint(0x2000, 0x2FFF)] + [rng.randint(0, 0xFFFF) for _ in range(7)]
    if rng.random() < 0.4:
        groups[3:5] = [0, 0]
    address = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    return address.compressed if rng.random() < 0.6 else address.exploded


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def gen_api_key(rng: random.Random) -> str:
    upper = string.ascii_uppercase + string.digits
    url = string.ascii_letters + string.digits + "_-"
    formats: list[Callable[[], str]] = [
        lambda: "sk-" + _alnum(rng, 48),
        lambda: "sk-proj-" + _alnum(rng, 64, url),
        lambda: "ghp_" + _alnum(rng, 36),
        lambda: "AKIA" + _alnum(rng, 16, upper),
        lambda: f"xoxb-{_digits(rng, 12)}-{_digits(rng, 13)}-{_alnum(rng, 24)}",
        lambda: ".".join(
            [
                _b64({"alg": "HS256", "typ": "JWT"}),
                _b64(
                    {
                        "sub": _digits(rng, 10),
                        "name": "Jane Doe",
                        "iat": rng.randint(10**9, 2 * 10**9),
                    }
                ),
                _alnum(rng, 43, url),
            ]
        ),
        lambda: "AIza" + _alnum(rng, 35, url),
        lambda: "hf_" + _alnum(rng, 34),
    ]
    return rng.choice(formats)()


def gen_national_id(rng: random.Random) -> str:
    if rng.random() < 0.7:  # US SSN in the valid ranges
        area = rng.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    first = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    while first + second in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}:
        second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    sep = rng.choice(["", " "])
    digits = _digits(rng, 6)
    return sep.join([first + second, digits[:2], digits[2:4], digits[4:], rng.choice("ABCD")])


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "email": gen_email,
    "phone": gen_phone,
    "credit_card": gen_card,
    "iban": gen_iban,
    "ip": gen_ip,
    "api_key": gen_api_key,
    "national_id": gen_national_id,
}

CONTEXTS: dict[str, list[str]] = {
    "email": ["You can reach me at {v} if anything changes.", "Please send the receipt to {v}.",
              "my email is {v}", "Contact: {v}"],
    "phone": ["Call me back on {v} after 5pm.", "My phone number is {v}.", "phone: {v}",
              "You can text me ({v}) any time."],
    "credit_card": ["My card number is {v}, expiry 04/27.", "card {v}",
                    "I paid with {v} but was charged twice."],
    "iban": ["Please refund the money to IBAN {v}.", "my account is {v}, thanks", "IBAN: {v}"],
    "ip": ["My router shows {v} as the address.", "the server at {v} is down", "IP {v}."],
    "api_key": ["here is my key: {v}", "export OPENAI_API_KEY={v}", "token={v}",
                "I set api_key = '{v}' in the config."],
    "national_id": ["My SSN is {v}.", "my national insurance number is {v}", "id: {v}"],
}  # fmt: skip


def pii_free(records: Sequence[Conversation]) -> list[Conversation]:
    return [r for r in records if not any(find_pii(m.content) for m in r.messages)]


def plant(record: Conversation, rng: random.Random, sentence: str) -> tuple[Conversation, int]:
    """Insert ``sentence`` into a random turn, at a sentence boundary or at the end: the copy
    and the turn index."""
    index = rng.randrange(len(record.messages))
    text = record.messages[index].content
    boundaries = [m.end() for m in re.finditer(r"[.!?]\s", text)]
    if boundaries and rng.random() < 0.7:
        at = rng.choice(boundaries)
        new_text = text[:at] + sentence + " " + text[at:]
    else:
        new_text = text + rng.choice([" ", "\n"]) + sentence
    return with_turn(record, index, new_text), index


@pytest.fixture(scope="module")
def planted_pii(bitext, hh) -> dict[str, list[tuple[Conversation, int, str, tuple[int, int]]]]:
    """For each kind, PER_KIND copies of clean real records with one generated value planted:
    ``(record, turn index, value, (start, end) of the value in that turn)``."""
    rng = random.Random(7)
    carriers = pii_free(rng.sample(bitext, 400) + rng.sample(hh, 400))
    out: dict[str, list[tuple[Conversation, int, str, tuple[int, int]]]] = {}
    for kind, generate in GENERATORS.items():
        out[kind] = []
        for i in range(PER_KIND):
            value = generate(rng)
            sentence = rng.choice(CONTEXTS[kind])
            if kind == "api_key" and rng.random() < 0.25:
                sentence = "Authorization: Bearer {v}"
                value = _alnum(rng, 40, string.ascii_letters + string.digits + "._-")
            carrier = relabel(rng.choice(carriers), f"{kind}{i}")
            record, index = plant(carrier, rng, sentence.format(v="\x00"))
            text = record.messages[index].content
            start = text.index("\x00")
            record = with_turn(record, index, text.replace("\x00", value))
            out[kind].append((record, index, value, (start, start + len(value))))
    return out


def test_generated_values_are_valid():
    rng = random.Random(0)
    for _ in range(200):
        card = re.sub(r"\D", "", gen_card(rng))
        assert luhn_valid(card)
        assert iban_valid(gen_iban(rng).replace(" ", ""))


@pytest.mark.parametrize("kind", PII_KINDS)
def test_pii_recall_per_kind(kind, planted_pii, ctx):
    planted = planted_pii[kind]
    found = 0
    for record, index, value, (start, end) in planted:
        spans = find_pii(record.messages[index].content)
        if any(k == kind and s <= start and e >= end for k, s, e in spans):
            found += 1
    recall = found / len(planted)
    report(f"pii recall {kind}", recall, f"({found}/{len(planted)})")
    assert recall >= MIN_RECALL

    records = [r for r, *_ in planted]
    result = PiiFilter(PiiFilter.Config(action="drop"), ctx).apply(records)
    assert_ledger(records, result)
    assert len(result.dropped) >= MIN_RECALL * len(records)
    values = [value for _, _, value, _ in planted]
    for dropped in result.dropped:
        assert dropped.reason == "pii" and dropped.filter == "pii"
        assert re.fullmatch(r"[a-z_]+ x\d+(, [a-z_]+ x\d+)*", dropped.detail), dropped.detail
        assert f"{kind} x1" in dropped.detail
        assert not any(value in dropped.detail for value in values)


def test_pii_false_positives_on_clean_records(clean_2000, ctx):
    result = PiiFilter(PiiFilter.Config(action="drop"), ctx).apply(clean_2000)
    assert_ledger(clean_2000, result)
    rate = len(result.dropped) / len(clean_2000)
    fired = Counter(part.split(" x")[0] for d in result.dropped for part in d.detail.split(", "))
    report("pii false-positive rate (2,000 clean records)", rate, f"{dict(fired)}")
    assert rate <= MAX_FP_RATE
    # what fires on this real data is the odd real email or phone; the checksum-validated and
    # structured kinds never do (no order number passes as a card, no date as a phone)
    assert set(fired) <= {"email", "phone"}


def test_pii_redact_keeps_records_and_removes_every_value(planted_pii, ctx):
    planted = [p for kind in PII_KINDS for p in planted_pii[kind]]
    kinds = [kind for kind in PII_KINDS for _ in planted_pii[kind]]
    records = [r for r, *_ in planted]
    flt = PiiFilter(PiiFilter.Config(), ctx)  # default action: redact
    assert flt.config.action == "redact"
    result = flt.apply(records)

    assert_ledger(records, result)
    assert result.dropped == [] and result.quarantined == []
    assert [r.source_id for r in result.kept] == [r.source_id for r in records]
    leaked = 0
    for kept, original, kind, (_, index, value, _) in zip(result.kept, records, kinds, planted):
        text = kept.messages[index].content
        leaked += value in text
        assert PLACEHOLDERS[kind] in text
        assert [m.role for m in kept.messages] == [m.role for m in original.messages]
        for i, (new, old) in enumerate(zip(kept.messages, original.messages)):
            if i != index:
                assert new == old  # only the planted turn changes
    report("pii redact leaks", leaked / len(records), f"({leaked}/{len(records)})")
    assert leaked <= (1 - MIN_RECALL) * len(records)
    assert sum(result.redacted.values()) >= MIN_RECALL * len(records)
    assert set(result.redacted) <= set(PII_KINDS)


def test_pii_redact_replaces_each_kind_with_its_placeholder(ctx):
    text = (
        "Mail anna.smith@example.com or call +44 20 7946 0958. Card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, host 203.0.113.7, key AKIAIOSFODNN7EXAMPL3, "
        "SSN 123-45-6789."
    )
    record = Conversation((Message("user", text), Message("assistant", "Noted.")), "t:1")
    result = PiiFilter(PiiFilter.Config(), ctx).apply([record])
    assert_ledger([record], result)
    assert result.kept[0].messages[0].content == (
        "Mail [EMAIL] or call [PHONE]. Card [CREDIT_CARD], IBAN [IBAN], host [IP], "
        "key [API_KEY], SSN [NATIONAL_ID]."
    )
    assert result.redacted == Counter(
        {
            "email": 1,
            "phone": 1,
            "credit_card": 1,
            "iban": 1,
            "ip": 1,
            "api_key": 1,
            "national_id": 1,
        }
    )


def test_pii_invalid_checksums_are_not_flagged(ctx):
    rng = random.Random(11)
    texts = []
    for _ in range(60):
        card = gen_card(rng)
        bad_card = card[:-1] + str((int(card[-1]) + 1) % 10)
        assert not luhn_valid(re.sub(r"\D", "", bad_card))
        iban = gen_iban(rng)
        bad_iban = iban[:-1] + str((int(iban[-1]) + 1) % 10)
        assert not iban_valid(bad_iban.replace(" ", ""))
        texts += [
            f"My card number is {bad_card}, expiry 04/27.",
            f"Please refund to IBAN {bad_iban}.",
        ]
    flagged = [t for t in texts if any(k in ("credit_card", "iban") for k, _, _ in find_pii(t))]
    assert flagged == []
    records = [
        Conversation((Message("user", t), Message("assistant", "OK")), f"t:{i}")
        for i, t in enumerate(texts)
    ]
    result = PiiFilter(PiiFilter.Config(kinds=["credit_card", "iban"], action="drop"), ctx).apply(
        records
    )
    assert_ledger(records, result)
    assert result.dropped == []


@pytest.mark.parametrize(
    "text",
    [
        "how can I cancel purchase 113542617735902?",  # Bitext order numbers
        "order #00004587345 has not arrived",
        "It was delivered on 2023-01-15 at 10:30:45, invoice 01-02-2023.",
        "Use version 1.2.3.4 of the package, or v10.0.0.1.",
        "The loopback 127.0.0.1, the netmask 255.255.255.0 and 0.0.0.0 name nobody.",
        "256.1.1.1 is not an address, nor is 1.2.3.",
        "SSNs never start with 000-12-3456, 666-12-3456 or 900-12-3456; 123-00-4567 is invalid.",
        "std::vector and a::b are C++, 12:30:45 is a time.",
        "Call 555-0132 or extension 1234.",
        "Prices: 1,299.99 USD, 3 500 000 people, ISBN 978-3-16-148410-0.",
        "risk-management-framework-for-small-teams is a slug, not an sk- key.",
    ],
)
def test_pii_does_not_flag_look_alikes(text):
    assert find_pii(text) == []


def test_pii_kinds_and_roles_restrict_what_is_looked_at(ctx):
    text = "Email me: anna@example.com, phone +1 415 555 0132."
    record = Conversation((Message("user", text), Message("assistant", text)), "t:1")
    only_email = PiiFilter(PiiFilter.Config(kinds=["email"]), ctx).apply([record])
    assert_ledger([record], only_email)
    assert only_email.kept[0].messages[0].content == "Email me: [EMAIL], phone +1 415 555 0132."
    only_assistant = PiiFilter(PiiFilter.Config(roles=["assistant"]), ctx).apply([record])
    assert_ledger([record], only_assistant)
    assert only_assistant.kept[0].messages[0].content == text
    assert only_assistant.kept[0].messages[1].content == "Email me: [EMAIL], phone [PHONE]."
    assert find_pii(text, ["phone"]) == [("phone", text.index("+1"), len(text) - 1)]


def test_pii_quarantine_names_kinds_and_counts_never_values(ctx):
    text = "Mail a@example.com and b@example.org, or call (415) 555-0132."
    records = [
        Conversation((Message("user", text), Message("assistant", "OK")), "t:1"),
        Conversation((Message("user", "Hello there"), Message("assistant", "Hi")), "t:2"),
    ]
    result = PiiFilter(PiiFilter.Config(action="quarantine"), ctx).apply(records)
    assert_ledger(records, result)
    assert [r.source_id for r in result.kept] == ["t:2"]
    (entry,) = result.quarantined
    assert (entry.filter, entry.reason, entry.detail) == ("pii", "pii", "email x2, phone x1")
    assert "example" not in entry.reason and "555" not in entry.reason
    dropped = PiiFilter(PiiFilter.Config(action="drop"), ctx).apply(records)
    assert_ledger(records, dropped)
    assert [(d.reason, d.detail) for d in dropped.dropped] == [("pii", "email x2, phone x1")]


def test_pii_config_is_validated():
    with pytest.raises(ValidationError):
        PiiFilter.Config(kinds=["passport"])
    with pytest.raises(ValidationError):
        PiiFilter.Config(action="mask")
    with pytest.raises(ValidationError):
        PiiFilter.Config(roles=["tool"])
    with pytest.raises(ValueError):
        find_pii("x", ["passport"])


# ============================================================================ repetition


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) >= 4]


@pytest.fixture(scope="module")
def repetition_carriers(bitext, hh, ctx) -> list[tuple[Conversation, int]]:
    """Real records and the index of a real assistant turn with ≥ 3 sentences and 40 words, that
    the filter keeps as they are."""
    rng = random.Random(3)
    flt = RepetitionFilter(RepetitionFilter.Config(), ctx)
    out = []
    for record in rng.sample(bitext, 300) + rng.sample(hh, 600):
        for index, message in enumerate(record.messages):
            text = message.content
            if (
                message.role == "assistant"
                and len(_sentences(text)) >= 3
                and len(text.split()) >= 40
                and not flt.findings(text)
            ):
                out.append((record, index))
                break
    assert len(out) >= 200
    return out


def plant_repetition(kind: str, text: str, rng: random.Random) -> str:
    """A degenerate version of a real response, as models produce them."""
    sentences = _sentences(text)
    if kind == "repeated_lines":  # a few real lines, then one of them over and over
        head = sentences[: rng.randint(1, 3)]
        loop = rng.choice(sentences)
        return "\n".join(head + [loop] * rng.randint(4, 10))
    if kind == "repeated_ngrams":  # prose that falls into a phrase loop (no line breaks)
        words = " ".join(sentences).split()
        start = rng.randrange(max(1, len(words) - 12))
        phrase = " ".join(words[start : start + rng.randint(4, 10)])
        head = " ".join(words[: rng.randint(20, 40)])
        repeats = max(6, (len(head.split()) // len(phrase.split())) + 3)
        return head + " " + " ".join([phrase] * repeats)
    if kind == "char_run":
        char = rng.choice("!?.*ahoe-=")
        return text.rstrip() + rng.choice([" ", "", "\n"]) + char * rng.randint(25, 300)
    raise AssertionError(kind)


REPETITION_SEEDS = {"repeated_lines": 1, "repeated_ngrams": 2, "char_run": 3}


@pytest.mark.parametrize("kind", sorted(REPETITION_SEEDS))
def test_repetition_recall(kind, repetition_carriers, ctx):
    rng = random.Random(REPETITION_SEEDS[kind])
    records = []
    for i, (record, index) in enumerate(rng.sample(repetition_carriers, PER_KIND)):
        degenerate = plant_repetition(kind, record.messages[index].content, rng)
        records.append(relabel(with_turn(record, index, degenerate), f"{kind}{i}"))
    result = RepetitionFilter(RepetitionFilter.Config(), ctx).apply(records)
    assert_ledger(records, result)
    hits = sum(d.reason == kind for d in result.dropped)
    recall = hits / len(records)
    report(f"repetition recall {kind}", recall, f"({hits}/{len(records)})")
    assert recall >= MIN_RECALL
    for d in result.dropped:
        assert re.match(r"turn \d+ \(assistant\): ", d.detail), d.detail
        assert re.search(r"\d\.\d\d > 0\.3|run of \d+ x", d.detail), d.detail


def test_repetition_false_positives_on_clean_records(clean_2000, ctx):
    result = RepetitionFilter(RepetitionFilter.Config(), ctx).apply(clean_2000)
    assert_ledger(clean_2000, result)
    rate = len(result.dropped) / len(clean_2000)
    report(
        "repetition false-positive rate (2,000 clean records)",
        rate,
        f"{dict(Counter(d.reason for d in result.dropped))}",
    )
    assert rate <= MAX_FP_RATE


@pytest.mark.parametrize(
    "answer",
    [
        "No, no, no. No.",  # too few words for n-grams
        "Yes.\nYes.\nYes.",  # too few lines
        "Sure!\n\n- item\n- item\n- other item\n- one more item",
        "Wow!!!!!!!!!!!!!!!!!!!!",  # a run of exactly 20 is allowed
        "ha " * 12,
    ],
)
def test_repetition_short_answers_are_not_flagged(answer, ctx):
    record = Conversation((Message("user", "Hi"), Message("assistant", answer)), "t:1")
    result = RepetitionFilter(RepetitionFilter.Config(), ctx).apply([record])
    assert_ledger([record], result)
    assert result.kept == [record]


def test_repetition_only_judges_configured_roles_and_quarantines(ctx):
    loop = "\n".join(["I am not sure what you mean."] * 6)
    record = Conversation(
        (Message("user", loop), Message("assistant", "Could you rephrase?")), "t:1"
    )
    kept = RepetitionFilter(RepetitionFilter.Config(), ctx).apply([record])
    assert kept.kept == [record]
    result = RepetitionFilter(
        RepetitionFilter.Config(roles=["user"], action="quarantine"), ctx
    ).apply([record])
    assert_ledger([record], result)
    (entry,) = result.quarantined
    assert (entry.filter, entry.reason) == ("repetition", "repeated_lines")
    assert entry.detail.startswith("turn 1 (user): repeated lines 0.83")


# ============================================================================== language

FOREIGN: list[tuple[str, str]] = [
    ("de", "Vielen Dank für Ihre Nachricht. Ich habe Ihre Bestellung storniert und die Rückerstattung veranlasst."),
    ("de", "Können Sie mir bitte sagen, wie ich mein Passwort zurücksetzen kann? Ich komme nicht mehr in mein Konto."),
    ("de", "Die Lieferung verzögert sich leider um zwei Tage, weil das Lager gerade umgebaut wird."),
    ("de", "Um Ihre Rechnungsadresse zu ändern, melden Sie sich an und öffnen Sie die Kontoeinstellungen."),
    ("de", "Ich möchte mich über den unfreundlichen Kundenservice beschweren, den ich gestern am Telefon erlebt habe."),
    ("de", "Schneiden Sie die Zwiebeln in kleine Würfel und braten Sie sie in etwas Butter goldbraun an."),
    ("de", "Der Hund braucht jeden Tag mindestens eine Stunde Bewegung, sonst wird er unruhig."),
    ("fr", "Merci pour votre message. J'ai annulé votre commande et le remboursement sera effectué sous cinq jours."),
    ("fr", "Pourriez-vous m'expliquer comment modifier mon adresse de livraison avant l'expédition du colis ?"),
    ("fr", "Je n'arrive pas à me connecter à mon compte depuis hier soir, pouvez-vous m'aider s'il vous plaît ?"),
    ("fr", "Pour changer de mode de paiement, rendez-vous dans la rubrique Mon compte puis cliquez sur Paiement."),
    ("fr", "Il faut laisser reposer la pâte pendant au moins une heure avant de l'étaler sur le plan de travail."),
    ("fr", "Les papillons monarques migrent chaque année du Canada jusqu'aux forêts du centre du Mexique."),
    ("fr", "Je voudrais savoir quels sont les frais de retour si le produit ne me convient pas."),
    ("es", "Gracias por tu mensaje. He cancelado el pedido y el reembolso aparecerá en tu cuenta en unos días."),
    ("es", "¿Me puedes decir cómo cambio la dirección de envío de mi pedido? Me mudé la semana pasada."),
    ("es", "No consigo descargar la factura de mi última compra, siempre me aparece un mensaje de error."),
    ("es", "Para crear una cuenta nueva, haz clic en Registrarse y completa el formulario con tus datos."),
    ("es", "Primero hay que hervir el agua con sal y después añadir la pasta durante unos diez minutos."),
    ("es", "Los perros necesitan salir a pasear todos los días para mantenerse sanos y tranquilos."),
    ("es", "Quisiera presentar una queja porque el producto llegó roto y nadie me ha respondido todavía."),
    ("it", "Grazie per il suo messaggio. Ho annullato l'ordine e il rimborso arriverà entro pochi giorni lavorativi."),
    ("it", "Mi potete spiegare come si cambia l'indirizzo di spedizione prima che il pacco venga spedito?"),
    ("it", "Non riesco ad accedere al mio account da ieri sera, potreste aiutarmi per favore?"),
    ("it", "Per modificare il metodo di pagamento, apra la sezione Il mio account e scelga Pagamenti."),
    ("it", "Bisogna lasciare riposare l'impasto per almeno un'ora prima di stenderlo sul tavolo."),
    ("it", "Vorrei sapere quanto costa la spedizione verso la Svizzera e quanto tempo ci vuole."),
    ("it", "Il mio gatto non mangia più da due giorni e dorme quasi tutto il tempo, sono preoccupata."),
]  # fmt: skip
"""Sentences written for these tests (German, French, Spanish, Italian)."""


@pytest.fixture(scope="module")
def language_filter(ctx) -> LanguageFilter:
    return LanguageFilter(LanguageFilter.Config(), ctx)


@pytest.fixture(scope="module")
def clean_1000(bitext, hh) -> list[Conversation]:
    rng = random.Random(1000)
    return rng.sample(bitext, 500) + rng.sample(hh, 500)


def test_language_recall_on_planted_turns(language_filter, bitext, hh):
    rng = random.Random(5)
    carriers = rng.sample(bitext, 40) + rng.sample(hh, 40)
    records, truth = [], []
    for i, (lang, sentence) in enumerate(FOREIGN):
        for role in ("user", "assistant"):
            record = carriers[(2 * i + (role == "assistant")) % len(carriers)]
            indexes = [k for k, m in enumerate(record.messages) if m.role == role]
            index = rng.choice(indexes)
            records.append(relabel(with_turn(record, index, sentence), f"{lang}{i}{role}"))
            truth.append((index + 1, role, lang))
    result = language_filter.apply(records)
    assert_ledger(records, result)

    dropped = {d.source_id: d for d in result.dropped}
    hits = correct_language = 0
    for record, (turn, role, lang) in zip(records, truth):
        entry = dropped.get(record.source_id)
        if entry is None:
            continue
        assert entry.reason == "wrong_language"
        assert re.fullmatch(
            r"turn \d+ \((user|assistant)\): [a-z]{2} [01]\.\d\d(; .*)?", entry.detail
        )
        match = re.search(rf"turn {turn} \({role}\): ([a-z]{{2}}) ", entry.detail)
        hits += match is not None
        correct_language += match is not None and match.group(1) == lang
    recall = hits / len(records)
    report("language recall (planted de/fr/es/it turns)", recall, f"({hits}/{len(records)})")
    report("language identified correctly", correct_language / len(records))
    assert recall >= MIN_RECALL
    assert correct_language >= MIN_RECALL * len(records)


def test_language_false_positives_on_clean_english(language_filter, clean_1000):
    result = language_filter.apply(clean_1000)
    assert_ledger(clean_1000, result)
    rate = len(result.dropped) / len(clean_1000)
    report(
        "language false-positive rate (1,000 clean English records)",
        rate,
        "; ".join(d.detail for d in result.dropped),
    )
    assert rate <= MAX_FP_RATE


def test_language_short_and_expected_turns_are_kept(ctx, language_filter):
    short = Conversation(
        (Message("user", "Danke schön!"), Message("assistant", "You're welcome.")), "t:1"
    )
    german = Conversation(
        (Message("user", FOREIGN[0][1]), Message("assistant", FOREIGN[1][1])), "t:2"
    )
    result = language_filter.apply([short, german])
    assert_ledger([short, german], result)
    assert result.kept == [short]
    assert result.dropped[0].detail.startswith("turn 1 (user): de ")
    assert "; turn 2 (assistant): de " in result.dropped[0].detail

    bilingual = LanguageFilter(LanguageFilter.Config(expected=["en", "DE"]), ctx)
    result = bilingual.apply([short, german])
    assert result.kept == [short, german]
    only_assistant = LanguageFilter(
        LanguageFilter.Config(roles=["assistant"], action="quarantine"), ctx
    )
    result = only_assistant.apply([german])
    assert_ledger([german], result)
    assert (result.quarantined[0].filter, result.quarantined[0].reason) == ("language", "wrong_language")
    assert result.quarantined[0].detail.startswith("turn 2 (assistant): de ")


def test_language_config_is_validated(ctx):
    with pytest.raises(ConfigError, match="xx"):
        LanguageFilter(LanguageFilter.Config(expected=["xx"]), ctx)
    with pytest.raises(ValidationError):
        LanguageFilter.Config(min_confidence=1.5)
    with pytest.raises(ValidationError):
        LanguageFilter.Config(expected=[])
    # the detector is cached per language set
    assert content.language_detector(("de", "en")) is content.language_detector(("de", "en"))


# ========================================================================== registration


def test_all_three_filters_register():
    registries = Registries()
    content.harness_register_filters(Registrar(registries["filter"], "content", "test"))
    for name, cls in (
        ("pii", PiiFilter),
        ("repetition", RepetitionFilter),
        ("language", LanguageFilter),
    ):
        assert registries["filter"].get(name).cls is cls
