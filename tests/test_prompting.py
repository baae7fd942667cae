"""Prompt variants: what a prompting arm sends, which examples it picks, and when it refuses."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.lib.model_api import GenerationConfig, ModelAPI
from harness.lib.models import LoadedModel
from harness.lib.prompting import (
    PromptCost,
    PromptSpec,
    check_variant_benchmark,
    prompt_cost,
    prompt_material,
    prompted,
)
from harness.types import Conversation, Message


def conv(user: str, assistant: str, source: str, system: str | None = None) -> Conversation:
    messages = ((Message("system", system),) if system else ()) + (Message("user", user), Message("assistant", assistant))
    return Conversation(messages, source)


POOL = [conv(f"question number {i} about topic {i % 5}", f"answer-{i}", f"train.jsonl:{i + 1}") for i in range(40)]


def word_embedder(texts: Sequence[str]) -> np.ndarray:
    """Bag-of-words hashed into 64 dimensions, normalised: texts sharing words are close."""
    rows = np.zeros((len(texts), 64), dtype=np.float32)
    for r, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            rows[r, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def api(harness_fake_model: LoadedModel) -> ModelAPI:
    assert harness_fake_model.api is not None
    return harness_fake_model.api


def answers_in(prompt: str) -> list[str]:
    return re.findall(r"answer-\d+", prompt)


def test_shots_put_the_same_examples_before_every_item_in_order(api: ModelAPI) -> None:
    model = prompted(api, PromptSpec(shots=3, system="Be brief."), POOL, seed=7)
    first = model.render_chat([{"role": "user", "content": "item one"}])
    second = model.render_chat([{"role": "user", "content": "item two"}])
    picked = answers_in(first)
    assert len(picked) == 3 and picked == answers_in(second)
    assert [int(a.split("-")[1]) for a in picked] == sorted(int(a.split("-")[1]) for a in picked)  # pool order
    # system, then each example's user and assistant turn, then the item
    expected = [{"role": "system", "content": "Be brief."}]
    for answer in picked:
        i = int(answer.split("-")[1])
        expected += [{"role": "user", "content": POOL[i].messages[0].content}, {"role": "assistant", "content": answer}]
    expected.append({"role": "user", "content": "item one"})
    assert first == api.render_chat(expected)


def test_shots_are_reproducible_per_seed_and_differ_across_seeds(api: ModelAPI) -> None:
    item = [{"role": "user", "content": "item"}]
    a = prompted(api, PromptSpec(shots=4), POOL, seed=1).render_chat(item)
    again = prompted(api, PromptSpec(shots=4), POOL, seed=1).render_chat(item)
    other = prompted(api, PromptSpec(shots=4), POOL, seed=2).render_chat(item)
    assert a == again
    assert answers_in(a) != answers_in(other)
    # the spec's own seed wins over the suite's
    assert prompted(api, PromptSpec(shots=4, seed=1), POOL, seed=99).render_chat(item) == a


def test_the_variant_system_prompt_goes_first_in_the_items_own_system_message(api: ModelAPI) -> None:
    model = prompted(api, PromptSpec(system="Variant rules."), POOL, seed=0)
    item = [{"role": "system", "content": "Item rules."}, {"role": "user", "content": "hi"}]
    expected = [{"role": "system", "content": "Variant rules.\n\nItem rules."}, {"role": "user", "content": "hi"}]
    assert model.render_chat(item) == api.render_chat(expected)


def test_nearest_picks_the_closest_examples_closest_last_and_never_the_item_itself(api: ModelAPI) -> None:
    pool = [
        conv("where is my parcel tracking", "track", "t:1"),
        conv("cancel my order now", "cancel-a", "t:2"),
        conv("please cancel my order", "cancel-b", "t:3"),
        conv("change my shipping address", "address", "t:4"),
        conv("I want to cancel the order", "self", "t:5"),
    ]
    model = prompted(api, PromptSpec(nearest=2), pool, seed=0, embedder=word_embedder)
    prompt = model.render_chat([{"role": "user", "content": "I want to cancel the order"}])
    assert "self" not in prompt  # the item's own record is excluded
    assert re.findall(r"cancel-[ab]", prompt) == ["cancel-a", "cancel-b"] or re.findall(r"cancel-[ab]", prompt) == ["cancel-b", "cancel-a"]
    assert "track" not in prompt and "address" not in prompt
    sims = word_embedder(["cancel my order now", "please cancel my order"]) @ word_embedder(["I want to cancel the order"])[0]
    closest = "cancel-a" if sims[0] > sims[1] else "cancel-b"
    assert re.findall(r"cancel-[ab]", prompt)[-1] == closest  # the closest sits next to the item
    other = model.render_chat([{"role": "user", "content": "change the shipping address please"}])
    assert "address" in other


def test_the_pool_is_embedded_once_per_wrapper(api: ModelAPI) -> None:
    calls: list[int] = []

    def counting(texts: Sequence[str]) -> np.ndarray:
        calls.append(len(texts))
        return word_embedder(texts)

    model = prompted(api, PromptSpec(nearest=2), POOL, seed=0, embedder=counting)
    for i in range(3):
        model.render_chat([{"role": "user", "content": f"topic {i}"}])
    assert calls.count(len(POOL)) == 1 and calls.count(1) == 3


def test_shots_that_overflow_the_context_are_refused_at_construction_with_the_counts(api: ModelAPI) -> None:
    context = api.tokenizer_facts().max_length
    long_pool = [conv("x " * 200, "y " * 200, f"t:{i}") for i in range(8)]
    with pytest.raises(ConfigError) as err:
        prompted(api, PromptSpec(shots=8), long_pool, seed=0)
    match = re.fullmatch(r"prompt variant: 8 examples take ([\d,]+) tokens > context ([\d,]+)", str(err.value))
    assert match and int(match[1].replace(",", "")) > context and int(match[2].replace(",", "")) == context


def test_prompt_cost_names_the_longest_item_when_examples_and_item_overflow(api: ModelAPI) -> None:
    context = api.tokenizer_facts().max_length
    pool = [conv("q " * 100, "a " * 100, f"t:{i}") for i in range(2)]
    spec = PromptSpec(shots=2)
    prompted(api, spec, pool, seed=0)  # fits on its own
    with pytest.raises(ConfigError, match=r"2 examples take [\d,]+ tokens \+ longest item [\d,]+ > context " + f"{context:,}"):
        prompt_cost(api, spec, pool, 0, [[{"role": "user", "content": "short"}], [{"role": "user", "content": "z" * context}]])


def test_nearest_overflow_is_refused_when_the_item_is_rendered(api: ModelAPI) -> None:
    pool = [conv("topic " + "w " * 300, "a " * 200, f"t:{i}") for i in range(2)]
    model = prompted(api, PromptSpec(nearest=1), pool, seed=0, embedder=word_embedder)  # no item yet: no check
    with pytest.raises(ConfigError, match=r"1 nearest examples take [\d,]+ tokens \+ item [\d,]+ > context"):
        model.render_chat([{"role": "user", "content": "topic " + "v " * 200}])


def test_prompt_cost_reports_example_share_and_mean_input_tokens(api: ModelAPI) -> None:
    items = [[{"role": "user", "content": "short"}], [{"role": "user", "content": "a longer item text"}]]
    cost = prompt_cost(api, PromptSpec(shots=3), POOL, 0, items)
    plain = [len(api.encode(api.render_chat(m))) for m in items]
    assert isinstance(cost, PromptCost)
    assert cost.example_tokens > 0
    assert cost.mean_input_tokens > sum(plain) / 2 + cost.example_tokens * 0.9
    assert cost.context_share == pytest.approx(cost.example_tokens / api.tokenizer_facts().max_length)


def test_raw_text_requests_pass_through_unchanged(api: ModelAPI) -> None:
    model = prompted(api, PromptSpec(shots=2, system="S"), POOL, seed=0)
    config = GenerationConfig(max_new_tokens=3)
    assert model.generate(["raw prompt"], config) == api.generate(["raw prompt"], config)
    assert model.loglikelihood([("ctx", " cont")]) == api.loglikelihood([("ctx", " cont")])
    assert model.lm_eval_model(8) is None
    assert model.capabilities == api.capabilities


def test_generate_chat_sends_the_variant_conversation(api: ModelAPI) -> None:
    model = prompted(api, PromptSpec(shots=2), POOL, seed=3)
    item = [{"role": "user", "content": "item"}]
    config = GenerationConfig(max_new_tokens=4)
    assert model.generate_chat([item], config) == api.generate([model.render_chat(item)], config)


def test_lm_eval_renders_chat_through_the_variant(harness_fake_model: LoadedModel) -> None:
    from dataclasses import replace

    from harness.lib.lmeval import run_task

    variant = prompted(harness_fake_model.api, PromptSpec(shots=2), POOL, seed=5)
    item = [{"role": "user", "content": "what now"}]
    task = {
        "task": "prompting_probe",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{label}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 2, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    model = replace(harness_fake_model)
    model.api = variant
    samples = run_task(model, task, [{"prompt": "what now", "label": "x"}], apply_chat_template=True)
    assert samples[0]["arguments"][0][0] == variant.render_chat(item)


def test_prompt_material_changes_with_any_pool_record_and_the_seed() -> None:
    spec = PromptSpec(shots=2)
    base = prompt_material(spec, POOL, 1)
    edited = POOL[:-1] + [conv("changed", "answer", "train.jsonl:40")]
    assert prompt_material(spec, POOL, 1) == base
    assert prompt_material(spec, edited, 1)["examples"] != base["examples"]
    assert prompt_material(spec, POOL, 2) != base
    assert base["shots"] == 2 and base["seed"] == 1 and base["system"] is None
    # a system-prompt variant does not depend on the training data
    assert prompt_material(PromptSpec(system="S"), POOL, 1) == prompt_material(PromptSpec(system="S"), edited, 3)
    assert prompt_material(PromptSpec(nearest=2), POOL, 1)["nearest"] == 2


def test_a_variant_asking_more_examples_than_the_pool_holds_is_refused(api: ModelAPI) -> None:
    with pytest.raises(ConfigError, match="5 asks for more examples than the 2 training records"):
        prompted(api, PromptSpec(shots=5), POOL[:2], seed=0)


def test_raw_text_benchmarks_are_refused_on_a_variant_arm() -> None:
    from harness_plugins.benchmarks.hellaswag import HellaSwag
    from harness_plugins.benchmarks.mmlu import MMLU
    from harness_plugins.benchmarks.support_intent import SupportIntent

    assert check_variant_benchmark("support_intent", SupportIntent.needs) is None
    for bench in (MMLU, HellaSwag):
        message = check_variant_benchmark(bench.name, bench.needs)
        assert message is not None and repr(bench.name) in message and "chat" in message


INTENT_PROMPT = "Classify the intent of this customer message. Answer with the intent label only.\n\nMessage: {}"


def bitext_rows() -> list[dict[str, str]]:
    import csv

    from harness.lib.data import data_dir

    path = data_dir() / "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_nearest_with_minilm_picks_a_same_intent_bitext_example(api: ModelAPI) -> None:
    """Real all-MiniLM-L6-v2 on real Bitext records: the examples retrieved for held-out
    messages are mostly of the message's own intent (27 intents: chance is about 4%)."""
    from harness.lib.data import seeded_sample

    rows = bitext_rows()
    train = seeded_sample(rows[::2], 300, 0, key=lambda r: r["instruction"])
    held = seeded_sample(rows[1::2], 10, 0, key=lambda r: r["instruction"])
    pool = [conv(INTENT_PROMPT.format(r["instruction"]), r["intent"], f"bitext.csv:{i}") for i, r in enumerate(train)]
    model = prompted(api, PromptSpec(nearest=3), pool, seed=0)
    assert isinstance(model, ModelAPI)
    same = 0
    for row in held:
        examples = model.examples_for([{"role": "user", "content": INTENT_PROMPT.format(row["instruction"])}])
        intents = [pool[i].messages[1].content for i in examples]
        same += intents[-1] == row["intent"]
    assert same >= 7, f"the closest example had the item's intent for only {same} of 10 items"


def test_a_variant_that_adds_nothing_answers_as_the_native_lm_eval_path(harness_fake_model: LoadedModel) -> None:
    """The base arm goes through lm-eval's own HFLM, a variant through the generic adapter: with
    nothing to add, both give the same greedy answers, so arms differ by their prompts only."""
    from dataclasses import replace

    from harness.lib.lmeval import run_task

    task = {
        "task": "prompting_paths",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{label}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 6, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    docs = [{"prompt": f"message {i} " * (1 + i % 4), "label": "x"} for i in range(6)]
    native = run_task(harness_fake_model, task, docs, apply_chat_template=True, batch_size=4)
    wrapped = replace(harness_fake_model, api=prompted(harness_fake_model.api, PromptSpec(), [], 0))
    through = run_task(wrapped, task, docs, apply_chat_template=True, batch_size=4)
    answers = [s["filtered_resps"] for s in native]
    assert any(str(a[0]).strip() for a in answers)  # the fake model says something
    assert answers == [s["filtered_resps"] for s in through]
    assert [s["arguments"][0][0] for s in native] == [s["arguments"][0][0] for s in through]
