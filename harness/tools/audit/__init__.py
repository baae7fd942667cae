"""Data audit: what a fine-tuning set looks like before anyone trains on it.

A fine-tune inherits the shape of its data: an intent with a tenth of the examples of the
others is learned worse, a topic nobody wrote examples for is not learned at all, duplicates
weigh some examples twice, a few very long records dominate the token budget, and records that
do not alternate user/assistant (or end on a user turn) train the model on the wrong thing.
``audit`` measures each of these on a list of ``Conversation`` records:

(a) **category balance**, when categories are given (a mapping ``source_id -> category``,
    e.g. from a CSV column): the count and share of each category; a category whose share is
    below ``min_share`` (default: half the uniform share, ``0.5 / n_categories``) is flagged,
    and the smallest ones are always listed;
(b) **diversity**: all-MiniLM-L6-v2 embeddings of the user turns (``harness.lib.embed``), seeded
    KMeans (``topic_clusters``) into ``clusters`` groups; each cluster has its size,
    three example texts (the members nearest its centre), a name (its most distinctive words,
    TF-IDF over the clusters), and is *under-represented* when its size is below half the mean
    cluster size.  Embedding costs about 12 ms a text on two CPU cores, so ``embed_sample``
    embeds a seeded sample; every other measurement covers all records;
(c) **near duplicates**: groups of records whose text is equal after
    ``harness.lib.text.normalise`` (whole conversations, and prompts alone), and
    how many records sit in groups of more than one;
(d) **lengths** of the turns of each role in characters, and in tokens when a tokenizer is
    given: min, median, p90, max;
(e) **difficulty**, only when a ``loss_fn`` (a reference model's loss of a record) is given,
    since it needs a model forward pass per record: mean, median, p90, max and the hardest ids;
(f) **format consistency**: the share of records whose turns (after leading system turns)
    alternate user/assistant starting with user, end with an assistant turn, and have no empty
    turn; each problem is counted, with example source ids.

``AuditReport.to_json()`` (``report``) is what ``harness audit`` writes to ``audit.json``;
``render(report, console)`` (``render``) prints the same as rich tables.  ``read`` reads a data
file and a category column for the CLI; ``measure`` holds the measurements (a) to (f).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import ConfigError, DataError
from harness.types import Conversation, Quarantined

from .measure import (
    category_balance,
    difficulty,
    distribution,
    diversity,
    duplicates,
    format_consistency,
    format_problems,
    lengths,
    quantile,
    user_text,
)
from .read import guess_format, load_tokenizer, read_categories, read_data
from .render import render
from .report import DEFAULT_CLUSTERS, AuditReport, EmbedFn, LossFn, ProgressFn

__all__ = [
    "AuditReport",
    "audit",
    "category_balance",
    "difficulty",
    "distribution",
    "diversity",
    "duplicates",
    "format_consistency",
    "format_problems",
    "guess_format",
    "lengths",
    "load_tokenizer",
    "quantile",
    "read_categories",
    "read_data",
    "render",
    "user_text",
]


def audit(
    records: Sequence[Conversation],
    *,
    categories: Mapping[str, str] | None = None,
    min_share: float | None = None,
    clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
    embed_sample: int | None = None,
    tokenizer: Any | None = None,
    loss_fn: LossFn | None = None,
    quarantined: Sequence[Quarantined] = (),
    source: str = "",
    embedder: EmbedFn | None = None,
    progress: ProgressFn | None = None,
) -> AuditReport:
    """Audit ``records`` (see the package docstring for what and why).

    ``categories`` maps a record's source id to its category (records without one count as
    uncategorised); ``clusters=0`` skips the embedding step (b); ``embed_sample`` embeds a
    seeded sample of that many records for (b); ``tokenizer`` (a Hugging Face tokenizer)
    adds token lengths to (d); ``loss_fn`` turns on (e); ``quarantined`` are the records the
    reader could not parse, counted by reason; ``embedder`` replaces ``harness.lib.embed.embed``
    (``embed(texts, progress)``); ``progress(done, total, message)`` reports embedding.
    """
    if not records:
        raise DataError(f"{source or 'audit'}: no records to audit")
    if embed_sample is not None and embed_sample < 1:
        raise ConfigError(f"embed_sample must be at least 1, got {embed_sample}")
    started = time.perf_counter()
    notes: list[str] = []
    balance = None
    if categories is not None:
        balance = category_balance(records, categories, min_share)
        if balance.uncategorised:
            notes.append(f"{balance.uncategorised} records have no category")
    div = None
    if clusters > 0:
        div = diversity(
            records, clusters=clusters, seed=seed, embed_sample=embed_sample,
            categories=categories, embedder=embedder, progress=progress,
        )  # fmt: skip
        if div.embedded < div.eligible:
            notes.append(f"diversity: a seeded sample of {div.embedded} of {div.eligible} records was embedded")
    reasons = Counter(q.reason.split(":")[0] for q in quarantined)
    return AuditReport(
        source=source,
        records=len(records),
        quarantined=len(quarantined),
        quarantine_reasons=dict(reasons.most_common()),
        format=format_consistency(records),
        duplicates=[duplicates(records, "conversation"), duplicates(records, "prompt")],
        lengths=lengths(records, tokenizer),
        balance=balance,
        diversity=div,
        difficulty=difficulty(records, loss_fn) if loss_fn is not None else None,
        seconds=round(time.perf_counter() - started, 2),
        notes=notes,
    )
