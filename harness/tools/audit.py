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

``AuditReport.to_json()`` is what ``harness audit`` writes to ``audit.json``;
``AuditReport.render(console)`` prints the same as rich tables.  The helpers at the end read a
data file or a suite's curated data, and a category column, for the CLI.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from harness.errors import ConfigError, DataError, require
from harness.lib.data import csv_rows, seeded_sample
from harness.lib.text import clip, normalise, token_counts
from harness.types import Conversation, Quarantined

if TYPE_CHECKING:
    from harness.plugin.registry import Registries

DEFAULT_CLUSTERS = 12
EXAMPLES = 3
SMALLEST = 3
"""How many of the smallest categories are always listed, flagged or not."""
TOP_GROUPS = 5
"""How many of the largest duplicate groups, hardest records and problem examples are kept."""
MAX_IDS = 10
ROLES = ("system", "user", "assistant")
PROBLEMS = ("empty_turn", "system_not_first", "not_alternating", "no_final_assistant")

LossFn = Callable[[Conversation], float]
EmbedFn = Callable[..., Any]
ProgressFn = Callable[[int, int, str], None]


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class CategoryCount:
    name: str
    count: int
    share: float
    flagged: bool


@dataclass
class CategoryBalance:
    """Counts of each category among the categorised records, largest first."""

    categorised: int
    uncategorised: int
    uniform_share: float
    min_share: float
    counts: list[CategoryCount]
    flagged: list[str]
    """categories whose share is below ``min_share``, smallest first"""
    smallest: list[str]
    """the ``SMALLEST`` smallest categories, smallest first, whether flagged or not"""


@dataclass
class Cluster:
    id: int
    size: int
    share: float
    name: str
    examples: list[str]
    example_ids: list[str]
    under_represented: bool
    top_category: str | None = None
    top_category_share: float | None = None


@dataclass
class Diversity:
    """Topic clusters of the user turns of ``embedded`` of ``eligible`` records."""

    model: str
    embedded: int
    eligible: int
    requested_clusters: int
    seed: int
    mean_size: float
    clusters: list[Cluster]
    under_represented: list[int]


@dataclass(frozen=True)
class DuplicateGroup:
    size: int
    example: str
    source_ids: list[str]


@dataclass
class Duplicates:
    """Groups of records with equal normalised text, for one ``scope``."""

    scope: str
    groups: int
    records_in_groups: int
    """records in groups of more than one (each group's first record included)"""
    redundant: int
    """records beyond the first of each group: what exact dedup would drop"""
    sizes: dict[int, int]
    """group size -> number of groups of that size (sizes > 1)"""
    largest: list[DuplicateGroup]


@dataclass(frozen=True)
class Distribution:
    min: float
    median: float
    p90: float
    max: float


@dataclass
class LengthStats:
    """Length of every turn of one role (``conversation``: of every whole record)."""

    role: str
    turns: int
    chars: Distribution
    tokens: Distribution | None = None


@dataclass
class Difficulty:
    measured: int
    mean: float
    distribution: Distribution
    hardest: list[tuple[str, float]]


@dataclass
class FormatConsistency:
    records: int
    consistent: int
    rate: float
    problems: dict[str, int]
    examples: dict[str, list[str]]


@dataclass
class AuditReport:
    """Everything ``audit`` measured; ``None`` sections were not asked for."""

    source: str
    records: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    format: FormatConsistency
    duplicates: list[Duplicates]
    lengths: list[LengthStats]
    balance: CategoryBalance | None = None
    diversity: Diversity | None = None
    difficulty: Difficulty | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only; ``sizes`` keys become strings, as JSON needs."""
        data = asdict(self)
        for dup in data["duplicates"]:
            dup["sizes"] = {str(k): v for k, v in dup["sizes"].items()}
        if data["difficulty"] is not None:
            data["difficulty"]["hardest"] = [
                {"source_id": sid, "loss": loss} for sid, loss in data["difficulty"]["hardest"]
            ]
        return data

    def render(self, console: Console) -> None:
        """Print the report as rich tables (user text is never read as rich markup)."""
        _render(self, console)


# --------------------------------------------------------------------------- measuring


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
    """(b) Seeded KMeans topic clusters of the user turns (see the module docstring)."""
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
    out: list[Cluster] = []
    for c, idx in enumerate(members):
        distance = ((vectors[idx] - centres[c]) ** 2).sum(axis=1)
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
        out.append(
            Cluster(
                id=c,
                size=int(idx.size),
                share=_r(idx.size / len(texts)),
                name=names[c] or (examples[0] if examples else ""),
                examples=examples,
                example_ids=example_ids,
                under_represented=bool(idx.size < 0.5 * mean_size),
                top_category=top,
                top_category_share=top_share,
            )
        )
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
    """Audit ``records`` (see the module docstring for what and why).

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
    notes = []
    balance = None
    if categories is not None:
        balance = category_balance(records, categories, min_share)
        if balance.uncategorised:
            notes.append(f"{balance.uncategorised} records have no category")
    div = None
    if clusters > 0:
        div = diversity(
            records,
            clusters=clusters,
            seed=seed,
            embed_sample=embed_sample,
            categories=categories,
            embedder=embedder,
            progress=progress,
        )
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
        seconds=_r(time.perf_counter() - started, 2),
        notes=notes,
    )


# ----------------------------------------------------------------------------- render


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:g}"


def _render(report: AuditReport, console: Console) -> None:
    fmt = report.format
    prefix = f"{report.source}:"

    def ids(source_ids: Iterable[str]) -> Text:
        """Source ids of the audited source shortened to their row or line number."""
        return Text(", ".join(s.removeprefix(prefix) if report.source else s for s in source_ids))
    summary = Table(title=f"Data audit: {report.source}", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("records", str(report.records))
    reasons = ", ".join(f"{k}: {v}" for k, v in report.quarantine_reasons.items())
    summary.add_row("quarantined", Text(f"{report.quarantined}" + (f" ({reasons})" if reasons else "")))
    summary.add_row("format consistency", f"{fmt.rate:.1%} ({fmt.consistent} of {fmt.records})")
    for dup in report.duplicates:
        summary.add_row(
            f"duplicates ({dup.scope})",
            f"{dup.groups} groups, {dup.records_in_groups} records in them, {dup.redundant} redundant",
        )
    for note in report.notes:
        summary.add_row("note", Text(note))
    console.print(summary)

    if report.balance is not None:
        bal = report.balance
        table = Table(
            title=f"Category balance: {len(bal.counts)} categories, {bal.categorised} records "
            f"(uniform share {bal.uniform_share:.2%}, flagged below {bal.min_share:.2%})"
        )
        columns: tuple[tuple[str, JustifyMethod], ...] = (("category", "left"), ("count", "right"), ("share", "right"), ("", "left"))
        for column, justify in columns:
            table.add_column(column, justify=justify)
        for c in bal.counts:
            mark = "below min share" if c.flagged else ("smallest" if c.name in bal.smallest else "")
            table.add_row(Text(c.name or "(empty)"), str(c.count), f"{c.share:.2%}", Text(mark, style="red" if c.flagged else "yellow"))
        console.print(table)

    if report.diversity is not None:
        div = report.diversity
        table = Table(
            title=f"Topic clusters of the user turns: {len(div.clusters)} clusters of {div.embedded} "
            f"records (mean size {div.mean_size:g}; under-represented below half of it)"
        )
        for column in ("id", "size", "share", "name", "examples", "top category", ""):
            table.add_column(column)
        for cl in div.clusters:
            top = f"{cl.top_category} ({cl.top_category_share:.0%})" if cl.top_category is not None else ""
            table.add_row(
                str(cl.id),
                str(cl.size),
                f"{cl.share:.1%}",
                Text(cl.name),
                Text("\n".join(cl.examples)),
                Text(top),
                Text("under-represented", style="red") if cl.under_represented else "",
            )
        console.print(table)

    table = Table(title="Lengths (characters; tokens when a tokenizer was given)")
    for column in ("role", "turns", "chars min", "median", "p90", "max", "tokens min", "median", "p90", "max"):
        table.add_column(column, justify="left" if column == "role" else "right")
    for ls in report.lengths:
        tok = ls.tokens
        table.add_row(
            ls.role,
            str(ls.turns),
            *(_fmt(v) for v in (ls.chars.min, ls.chars.median, ls.chars.p90, ls.chars.max)),
            *((_fmt(v) for v in (tok.min, tok.median, tok.p90, tok.max)) if tok else ("-",) * 4),
        )
    console.print(table)

    if fmt.problems:
        table = Table(title="Format problems")
        for column in ("problem", "records", "example rows/lines"):
            table.add_column(column)
        for problem, count in fmt.problems.items():
            table.add_row(problem, str(count), ids(fmt.examples[problem]))
        console.print(table)

    largest = [(dup.scope, g) for dup in report.duplicates for g in dup.largest]
    if largest:
        table = Table(title="Largest duplicate groups")
        for column in ("scope", "size", "example", "rows/lines"):
            table.add_column(column)
        for scope, group in largest:
            table.add_row(scope, str(group.size), Text(group.example), ids(group.source_ids[:MAX_IDS]))
        console.print(table)

    if report.difficulty is not None:
        d = report.difficulty
        table = Table(title=f"Difficulty: reference-model loss of {d.measured} records")
        for column in ("mean", "min", "median", "p90", "max", "hardest"):
            table.add_column(column)
        hardest = ", ".join(f"{ids([sid])} ({loss:g})" for sid, loss in d.hardest)
        dist = d.distribution
        table.add_row(*(_fmt(v) for v in (d.mean, dist.min, dist.median, dist.p90, dist.max)), Text(hardest))
        console.print(table)


# ----------------------------------------------------------------- reading, for the CLI


_SUFFIX_FORMATS = {".jsonl": "auto", ".ndjson": "auto", ".json": "auto", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def guess_format(path: Path) -> str:
    """The reader for a data path: ``hf_disk`` for a folder, else by suffix."""
    if path.is_dir():
        return "hf_disk"
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(f"{path}: cannot tell the format from the suffix; pass --format") from None


def read_data(
    registries: Registries, path: Path, source: str, fmt: str, options: Mapping[str, Any]
) -> tuple[list[Conversation], list[Quarantined]]:
    """Read one data file (or ``hf_disk`` folder) with the ``fmt`` reader and its options."""
    from pydantic import ValidationError

    from harness.plugin.components import Reader, RunContext
    from harness.plugin.registry import narrow

    info = registries.get("reader", fmt)
    try:
        config = info.cls.Config.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        hint = " (pass --user and --assistant templates over the columns)" if fmt in {"csv", "parquet", "hf_disk"} else ""
        raise ConfigError(f"reader {fmt!r}: {problems}{hint}") from None
    folder = bool(getattr(info.cls, "reads_folder", False))
    if not (path.is_dir() if folder else path.is_file()):
        raise DataError(f"{source}: data {'folder' if folder else 'file'} not found: {path}")
    reader = narrow(info.cls(config, RunContext(path.parent, path.parent, builder=registries)), Reader)
    records: list[Conversation] = []
    quarantined: list[Quarantined] = []
    for item in reader.read(path, source):
        if isinstance(item, Quarantined):
            quarantined.append(item)
        else:
            records.append(item)
    return records, quarantined


def _category(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def read_categories(
    path: Path, source: str, fmt: str, column: str, options: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``source_id -> category`` from ``column`` of a data file, keyed exactly as the ``fmt``
    reader keys its records (``source:row``, ``source:line``), so the two can be joined.

    CSV rows are read with ``harness.lib.data.csv_rows`` (the line numbers the csv reader uses);
    Parquet and ``hf_disk`` rows are 1-based; JSONL takes a top-level key of each object.
    A row without a value (or a line that is not a JSON object) has no category."""
    options = dict(options or {})
    out: dict[str, str] = {}
    if fmt == "csv":
        text = path.read_bytes().decode("utf-8-sig")
        rows = csv_rows(io.StringIO(text, newline=""), options.get("delimiter", ","))
        header_line, header = next(rows, (1, []))
        if column not in header:
            raise DataError(f"{source}:{header_line}: CSV has no column {column!r}; columns: {header}")
        index = header.index(column)
        for line, values in rows:
            if len(values) == len(header):
                out[f"{source}:{line}"] = values[index]
        return out
    if fmt == "parquet":
        pq = require("pyarrow.parquet")
        names = pq.ParquetFile(str(path)).schema_arrow.names
        if column not in names:
            raise DataError(f"{source}: Parquet file has no column {column!r}; columns: {names}")
        values = pq.read_table(str(path), columns=[column]).column(column).to_pylist()
    elif fmt == "hf_disk":
        from harness.lib.records import load_saved_dataset

        data = load_saved_dataset(path, source, options.get("dataset_split"))
        if column not in data.column_names:
            raise DataError(f"{source}: dataset has no column {column!r}; columns: {data.column_names}")
        values = data[column]
    else:  # the JSONL readers
        seen = False
        with path.open("rb") as fh:
            for line, raw in enumerate(fh, start=1):
                try:
                    obj = json.loads(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(obj, dict) and column in obj:
                    seen = True
                    if (value := _category(obj[column])) is not None:
                        out[f"{source}:{line}"] = value
        if not seen:
            raise DataError(f"{source}: no JSON object has a {column!r} key")
        return out
    for row, value in enumerate(values, start=1):
        if (category := _category(value)) is not None:
            out[f"{source}:{row}"] = category
    return out


def load_tokenizer(path: Path) -> Any:
    """A Hugging Face tokenizer from a local folder (never the network)."""
    transformers = require("transformers")
    if not path.is_dir():
        raise ConfigError(f"--tokenizer {path}: not a folder with a tokenizer")
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
