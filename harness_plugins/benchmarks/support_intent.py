"""Customer-support intent classification: the built-in domain benchmark.

Items are held-out records of the Bitext customer-support data set (27 intents): the same stable
hash split that ``DataSource(split=train)`` uses, so they never leak into training.  The model
sees ``prompt`` (with ``{instruction}`` filled in) as a chat user turn and must answer with the
intent label alone; scoring is strict exact match after trimming surrounding whitespace, as a
production parser of the label would be.  Generation is greedy, through lm-evaluation-harness.

With ``samples: k`` (and a ``temperature`` above 0) each message is answered k times through the
model's chat template (``harness.lib.repeats``: seeded from the suite's seed and the item's id)
and its score is the share of answers that match; each answer is kept in ``ItemResult.samples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import Field, model_validator

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, ProgressFn, item_id
from harness.lib import repeats
from harness.lib.data import csv_rows, in_split, seeded_sample
from harness.errors import DataError
from harness.lib.models import LoadedModel
from harness.types import ItemResult
from harness.plugin.registry import Registrar

DEFAULT_FILE = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


class SupportIntentConfig(ComponentConfig):
    prompt: str = Field(
        "Classify the intent of this customer message. Answer with the intent label only.\n\n"
        "Message: {instruction}",
        description="user turn; '{instruction}' is replaced by the customer's message",
    )
    path: str = Field(DEFAULT_FILE, description="CSV under the data directory")
    source: str = Field(
        "${data}/" + DEFAULT_FILE,
        description="the source name the training data uses for this file (keys the split)",
    )
    holdout_fraction: float = Field(0.1, gt=0, le=1)
    split_seed: int = 0
    sample: int = Field(100, ge=1, description="held-out items to evaluate")
    seed: int = 0
    max_new_tokens: int = Field(12, ge=1)
    batch_size: int = Field(8, ge=1)
    samples: int = Field(1, ge=1, description="answers per message (1: greedy); the score is the share that match")
    temperature: float = Field(0.0, ge=0, description="sampling temperature when samples > 1 (0 is refused then)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling when samples > 1")

    @model_validator(mode="after")
    def _sampling(self) -> SupportIntentConfig:
        repeats.check_repeats(self.samples, self.temperature)
        return self


class SupportIntent(Benchmark[SupportIntentConfig]):
    name = "support_intent"
    description = "Bitext customer-support intent (27 labels), held-out split, strict exact match"
    Config = SupportIntentConfig
    needs = ("generate", "chat")
    metric = "exact_match"

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        cfg = self.config
        path = self.ctx.data_path(cfg.path, "customer-support data")
        if "{instruction}" not in cfg.prompt:
            raise DataError("support_intent.prompt must contain '{instruction}'")
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = csv_rows(fh)
            header, held = next(rows, (1, []))[1], []
            for start, values in rows:
                source_id = f"{cfg.source}:{start}"
                if in_split(source_id, "holdout", cfg.holdout_fraction, cfg.split_seed):
                    held.append((source_id, dict(zip(header, values))))
        if not held:
            raise DataError(f"{path}: no held-out records")
        return [
            {
                "id": source_id.rsplit("/", 1)[-1],
                "prompt": cfg.prompt.replace("{instruction}", row["instruction"]),
                "intent": row["intent"],
            }
            for source_id, row in seeded_sample(held, cfg.sample, cfg.seed, key=lambda p: p[0])
        ]

    def items(self) -> list[Item]:
        return self.docs

    def item_messages(self, item: Item) -> list[dict[str, str]]:
        """The one user turn both the greedy (lm-eval, chat template) and the sampled path send."""
        return [{"role": "user", "content": item["prompt"]}]

    def cache_material(self) -> dict[str, Any]:
        """Besides the config and code: the suite seed that sampled answers are drawn from."""
        return {**super().cache_material(), **repeats.cache_material(self.config.samples, self.ctx.seed)}

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        if self.config.samples > 1:
            return self._sampled(model, items, progress)
        return self._greedy(model, items, progress)

    def _sampled(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        """``samples`` answers per message, each item with its own seed; the score is their mean."""
        from harness.lib.model_api import GenerationConfig, model_api

        cfg = self.config
        gen = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            stop=("\n",), batch_size=cfg.batch_size,
        )  # fmt: skip
        api, results = model_api(model), []
        for done, doc in enumerate(items):
            progress(done, len(items), f"{cfg.samples} sampled answers per message")
            chat = self.item_messages(doc)
            drawn = repeats.draw(api, chat, item_id(doc), cfg.samples, gen, self.ctx.seed)
            score, samples = repeats.mean_of([float(t.strip() == doc["intent"]) for t in drawn], drawn)
            results.append(ItemResult(
                item_id(doc), drawn[0].strip(), doc["intent"], score, raw=drawn[0], category=doc["intent"], samples=samples,
            ))  # fmt: skip
        progress(len(items), len(items), "done")
        return results

    def _greedy(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        from harness.lib.lmeval import run_task
        from harness.lib.model_api import model_api

        cfg = self.config
        eos = model_api(model).tokenizer_facts().eos_token or "\n"
        task = {
            "task": "harness_support_intent",
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{intent}}",
            "generation_kwargs": {
                "until": [eos, "\n"],
                "max_gen_toks": cfg.max_new_tokens,
                "do_sample": False,
            },
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        }
        progress(0, len(items), "greedy generation")
        samples = run_task(
            model, task, list(items), batch_size=cfg.batch_size, apply_chat_template=True, seed=cfg.seed
        )
        results = []
        for doc, sample in zip(items, samples):
            raw = sample["filtered_resps"][0]
            text = raw if isinstance(raw, str) else str(raw[0])
            prediction = text.strip()
            score = float(prediction == doc["intent"])
            results.append(ItemResult(item_id(doc), prediction, doc["intent"], score, raw=text, category=doc["intent"]))
        progress(len(items), len(items), "done")
        return results


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(SupportIntent)
