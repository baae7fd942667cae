"""The measurements of a data audit, (a) to (f) of the package docstring: each a function of the
records (and, for diversity, an embedder), returning one value of ``report``."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import DataError, require
from harness.lib.data import seeded_sample
from harness.lib.text import clip, normalise, token_counts
from harness.types import Conversation

from .report import (
    DEFAULT_CLUSTERS,
    EXAMPLES,
    MAX_IDS,
    PROBLEMS,
    ROLES,
    SMALLEST,
    TOP_GROUPS,
    CategoryBalance,
    CategoryCount,
    Cluster,
    Difficulty,
    Distribution,
    Diversity,
    DuplicateGroup,
    Duplicates,
    EmbedFn,
    FormatConsistency,
    LengthStats,
    LossFn,
    ProgressFn,
)


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default method)."""
    if not sorted_values:
        return float("nan")
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def distribution(values: Iterable[float]) -> Distribution:
    ordered = sorted(values)
    return Distribution(
        min=_r(ordered[0]) if ordered else float("nan"),
        median=_r(quantile(ordered, 0.5)),
        p90=_r(quantile(ordered, 0.9)),
        max=_r(ordered[-1]) if ordered else float("nan"),
    )


def user_text(record: Conversation) -> str:
    """The user turns of a record, joined by newlines: what a prompt's topic is judged on."""
    return "\n".join(m.content for m in record.messages if m.role == "user")


def category_balance(
    records: Sequence[Conversation], categories: Mapping[str, str], min_share: float | None = None
) -> CategoryBalance:
    """(a) Counts and shares of each category among the records that have one."""
    counts = Counter(categories[r.source_id] for r in records if r.source_id in categories)
    categorised = sum(counts.values())
    uniform = 1.0 / len(counts) if counts else 0.0
    threshold = 0.5 * uniform if min_share is None else min_share
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [
        CategoryCount(name, count, _r(count / categorised, 6), count / categorised < threshold)
        for name, count in ordered
    ]
    smallest_first = sorted(rows, key=lambda c: (c.count, c.name))
    return CategoryBalance(
        categorised=categorised,
        uncategorised=len(records) - categorised,
        uniform_share=_r(uniform, 6),
        min_share=_r(threshold, 6),
        counts=rows,
        flagged=[c.name for c in smallest_first if c.flagged],
        smallest=[c.name for c in smallest_first[:SMALLEST]],
    )


def _cluster_names(texts_by_cluster: Sequence[Sequence[str]]) -> list[str]:
    """The three most distinctive words of each cluster: TF-IDF with one document per cluster,
    so a word every cluster uses ("order", "please") scores low.  Words are letters only:
    order numbers and amounts are distinctive but say nothing about the topic."""
    text = require("sklearn.feature_extraction.text")
    docs = [" ".join(texts) for texts in texts_by_cluster]
    try:
        vectorizer = text.TfidfVectorizer(
            stop_words="english", sublinear_tf=True, token_pattern=r"(?u)\b[^\W\d_]{2,}\b"
        )
        matrix = vectorizer.fit_transform(docs)
    except ValueError:  # nothing but stop words
        return ["" for _ in docs]
    vocab = vectorizer.get_feature_names_out()
    names = []
    for row in range(matrix.shape[0]):
        weights = matrix.getrow(row).toarray().ravel()
        top = [vocab[i] for i in weights.argsort()[::-1][:3] if weights[i] > 0]
        names.append(" / ".join(top))
    return names


@dataclass(frozen=True)
class _Embedded:
    """The records embedded for the diversity measure, their user texts, the mean cluster size
    and the categories (when given)."""

    chosen: Sequence[Conversation]
    texts: Sequence[str]
    mean_size: float
    categories: Mapping[str, str] | None


def _cluster(c: int, idx: Any, distance: Any, name: str, sample: _Embedded) -> Cluster:
    """Cluster ``c`` of members ``idx`` (indices into the sample, at squared ``distance`` from
    its centre): its distinct examples nearest the centre, its name (the first example when
    TF-IDF found none), and its most common category."""
    chosen, texts, categories = sample.chosen, sample.texts, sample.categories
    examples: list[str] = []
    example_ids: list[str] = []
    for i in idx[distance.argsort()]:
        clipped = clip(texts[i])
        if clipped not in examples:
            examples.append(clipped)
            example_ids.append(chosen[i].source_id)
        if len(examples) == EXAMPLES:
            break
    top, top_share = None, None
    if categories:
        cats = Counter(categories[chosen[i].source_id] for i in idx if chosen[i].source_id in categories)
        if cats:
            top, n_top = cats.most_common(1)[0]
            top_share = _r(n_top / sum(cats.values()))
    return Cluster(
        id=c,
        size=int(idx.size),
        share=_r(idx.size / len(texts)),
        name=name or (examples[0] if examples else ""),
        examples=examples,
        example_ids=example_ids,
        under_represented=bool(idx.size < 0.5 * sample.mean_size),
        top_category=top,
        top_category_share=top_share,
    )


def diversity(
    records: Sequence[Conversation],
    *,
    clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
    embed_sample: int | None = None,
    categories: Mapping[str, str] | None = None,
    embedder: EmbedFn | None = None,
    progress: ProgressFn | None = None,
) -> Diversity:
    """(b) Seeded KMeans topic clusters of the user turns (see the package docstring)."""
    np = require("numpy")
    from harness.lib.embed import EMBEDDER_ID, embed, topic_clusters

    eligible = [r for r in records if user_text(r).strip()]
    if not eligible:
        raise DataError("diversity: no record has a non-empty user turn to embed")
    chosen = seeded_sample(eligible, embed_sample, seed, key=lambda r: r.source_id)
    texts = [user_text(r) for r in chosen]

    def embed_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total, "embedding user turns")

    vectors = (embedder or embed)(texts, embed_progress)
    # topic_clusters with every text "covered" (similarity 1 >= 0) is plain seeded KMeans
    # (n_init=3, k capped at the number of distinct vectors): its coverage refinement is a no-op.
    labels, centres, _ = topic_clusters(
        vectors, np.ones(len(texts)), clusters, seed, coverage=0.0
    )
    k = int(centres.shape[0])
    mean_size = len(texts) / k
    members = [np.flatnonzero(labels == c) for c in range(k)]
    names = _cluster_names([[texts[i] for i in idx] for idx in members])
    sample = _Embedded(chosen, texts, mean_size, categories)
    out = [
        _cluster(c, idx, ((vectors[idx] - centres[c]) ** 2).sum(axis=1), names[c], sample)
        for c, idx in enumerate(members)
    ]
    out.sort(key=lambda cl: (-cl.size, cl.id))
    return Diversity(
        model=EMBEDDER_ID["model"],
        embedded=len(texts),
        eligible=len(eligible),
        requested_clusters=clusters,
        seed=seed,
        mean_size=_r(mean_size, 2),
        clusters=out,
        under_represented=sorted(cl.id for cl in out if cl.under_represented),
    )


def duplicates(records: Sequence[Conversation], scope: str = "conversation") -> Duplicates:
    """(c) Groups of records whose normalised text is equal: whole conversations (``scope``
    ``conversation``, the key of the ``exact_dedup`` filter) or the user turns (``prompt``)."""

    groups: dict[str, list[Conversation]] = defaultdict(list)
    for record in records:
        turns = [m for m in record.messages if scope == "conversation" or m.role == "user"]
        groups["\x1e".join(f"{m.role}\x1f{normalise(m.content)}" for m in turns)].append(record)
    multi = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0].source_id))

    return Duplicates(
        scope=scope,
        groups=len(multi),
        records_in_groups=sum(len(g) for g in multi),
        redundant=sum(len(g) - 1 for g in multi),
        sizes=dict(sorted(Counter(len(g) for g in multi).items())),
        largest=[
            DuplicateGroup(
                len(g), clip(user_text(g[0]) or g[0].messages[0].content), [r.source_id for r in g[:MAX_IDS]]
            )
            for g in multi[:TOP_GROUPS]
        ],
    )


def lengths(records: Sequence[Conversation], tokenizer: Any | None = None) -> list[LengthStats]:
    """(d) Characters (and tokens, with a tokenizer) of every turn per role, and of every
    whole record (``conversation``: its turns' contents, without a chat template)."""
    texts: dict[str, list[str]] = {role: [] for role in ROLES}
    for record in records:
        for m in record.messages:
            texts[m.role].append(m.content)
    whole = ["\n".join(m.content for m in r.messages) for r in records]
    out = []
    for role, items in [*texts.items(), ("conversation", whole)]:
        if not items:
            continue
        tokens = None
        if tokenizer is not None:
            tokens = distribution(token_counts(tokenizer, items))
        out.append(LengthStats(role, len(items), distribution(len(t) for t in items), tokens))
    return out


def difficulty(records: Sequence[Conversation], loss_fn: LossFn) -> Difficulty:
    """(e) A reference model's loss of each record (``loss_fn``); NaN or infinite losses are
    an error, since they would silently drop out of the summary."""
    losses = []
    for record in records:
        loss = float(loss_fn(record))
        if not math.isfinite(loss):
            raise ValueError(f"{record.source_id}: loss_fn returned {loss}")
        losses.append((record.source_id, loss))
    hardest = sorted(losses, key=lambda kv: -kv[1])[:TOP_GROUPS]
    values = [v for _, v in losses]
    return Difficulty(
        measured=len(values),
        mean=_r(sum(values) / len(values)) if values else float("nan"),
        distribution=distribution(values),
        hardest=[(sid, _r(v)) for sid, v in hardest],
    )


def format_problems(record: Conversation) -> list[str]:
    """The format problems of one record, among ``PROBLEMS`` (empty: consistent)."""
    problems = []
    if any(not m.content.strip() for m in record.messages):
        problems.append("empty_turn")
    roles = [m.role for m in record.messages]
    leading = 0
    while leading < len(roles) and roles[leading] == "system":
        leading += 1
    rest = roles[leading:]
    if "system" in rest:
        problems.append("system_not_first")
    dialogue = [r for r in rest if r != "system"]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(dialogue))]
    if dialogue != expected:
        problems.append("not_alternating")
    if not roles or roles[-1] != "assistant":
        problems.append("no_final_assistant")
    return problems


def format_consistency(records: Sequence[Conversation]) -> FormatConsistency:
    """(f) The share of records without any format problem, and each problem's count."""
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    consistent = 0
    for record in records:
        problems = format_problems(record)
        consistent += not problems
        for problem in problems:
            counts[problem] += 1
            if len(examples[problem]) < TOP_GROUPS:
                examples[problem].append(record.source_id)
    return FormatConsistency(
        records=len(records),
        consistent=consistent,
        rate=_r(consistent / len(records), 6) if records else float("nan"),
        problems={p: counts[p] for p in PROBLEMS if counts[p]},
        examples={p: examples[p] for p in PROBLEMS if counts[p]},
    )
