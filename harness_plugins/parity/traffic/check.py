"""The ``traffic_shift`` parity check: four analyses of the offline set against production
traffic (length, script, embedding tests, topic clusters), each a named step returning one frozen
value, and the decision rules that turn them into findings, kept in one table (``RULES``).  What
each analysis measures and when each finding fires is described in the package docstring."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.errors import ConfigError, require
from harness.lib.data import seeded_sample
from harness.lib.embed import EMBED_BATCH, cached_embed, topic_clusters
from harness.lib.text import clip, token_counts
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.types import Finding, Severity

from .measures import (
    SCRIPTS,
    coverage_permutation_test,
    mmd_permutation_test,
    nearest_similarities,
    script_of,
    script_shares,
    total_variation,
)

if TYPE_CHECKING:
    from harness.lib.pipeline import Request
    from harness.plugin.parity import ParityContext

NAME = "traffic_shift"
MIN_TEXTS = 20
EXAMPLES = 3
MAX_IDS = 200
"""request ids listed per cluster (as in the other parity checks; ``size`` is exact)"""


class TrafficShiftConfig(ComponentConfig):
    alpha: float = Field(
        0.01, gt=0, lt=1, description="level of the KS test and the embedding test"
    )
    permutations: int = Field(
        1000, ge=1, description="permutations of each embedding test"
    )
    clusters: int = Field(
        8, ge=1, description="KMeans clusters of the production embeddings"
    )
    coverage_similarity: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="a production cluster is not covered when the median similarity of its "
        "members to their nearest offline text is below this",
    )
    max_texts: int = Field(
        500, ge=MIN_TEXTS, description="seeded sample size of each side"
    )
    min_uncovered_share: float = Field(
        0.10,
        ge=0,
        le=1,
        description="uncovered clusters holding this share of traffic are material",
    )
    min_similarity_gap: float = Field(
        0.10,
        ge=0,
        le=2,
        description="a drop of this much in mean nearest-offline similarity (production vs. "
        "offline itself) is material",
    )
    high_uncovered_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="uncovered share from which a traffic shift is 'high'",
    )
    length_ratio: float = Field(
        1.5,
        ge=1,
        description="length_shift when one median token count exceeds the other by this factor",
    )
    max_script_tv: float = Field(
        0.2,
        ge=0,
        le=1,
        description="language_shift above this total-variation distance",
    )


def _r(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


# --------------------------------------------------------------------------- analyses


@dataclass(frozen=True)
class Sides:
    """The seeded samples compared: production and offline requests, and their texts."""

    prod: list[Request]
    offline: list[Request]
    prod_texts: list[str]
    off_texts: list[str]


@dataclass(frozen=True)
class LengthAnalysis:
    """Token counts of both sides: the KS test, the medians and their ratio, and how many
    production requests fall outside the offline 5th-95th percentile range."""

    metrics: dict[str, Any]
    ks_p_value: float
    median_ratio: float
    off_median: float
    prod_median: float
    outside: int


@dataclass(frozen=True)
class ScriptAnalysis:
    """Script-family shares of both sides and their total-variation distance."""

    metrics: dict[str, Any]
    off_shares: dict[str, float]
    prod_shares: dict[str, float]
    tv: float


@dataclass(frozen=True)
class EmbeddingAnalysis:
    """The embeddings, both permutation tests combined (Bonferroni), and the similarity gap."""

    metrics: dict[str, Any]
    off_vec: Any
    prod_vec: Any
    prod_nn: Any
    p_value: float
    gap: float


@dataclass(frozen=True)
class ClusterAnalysis:
    """Production topic clusters, uncovered ones first, and the uncovered share of traffic."""

    clusters: list[dict[str, Any]]
    uncovered: list[dict[str, Any]]
    uncovered_n: int
    uncovered_share: float
    moved: int


@dataclass(frozen=True)
class Analyses:
    """Everything the decision rules read."""

    cfg: TrafficShiftConfig
    sides: Sides
    length: LengthAnalysis
    script: ScriptAnalysis
    embedding: EmbeddingAnalysis
    clusters: ClusterAnalysis


def analyse_length(ctx: ParityContext, sides: Sides) -> LengthAnalysis:
    """Token counts with the offline pipeline's tokenizer; two-sample KS test and medians."""
    np, stats = require("numpy"), require("scipy.stats")
    prod_len = token_counts(ctx.offline.tokenizer, sides.prod_texts)
    off_len = token_counts(ctx.offline.tokenizer, sides.off_texts)
    ks = stats.ks_2samp(off_len, prod_len)
    off_median, prod_median = float(np.median(off_len)), float(np.median(prod_len))
    ratio = max(off_median, prod_median) / max(min(off_median, prod_median), 1.0)
    lo, hi = np.percentile(off_len, [5, 95])
    outside = sum(1 for n in prod_len if n < lo or n > hi)
    metrics = {
        "offline_median_tokens": off_median,
        "production_median_tokens": prod_median,
        "median_ratio": _r(ratio, 4),
        "ks_statistic": _r(ks.statistic),
        "ks_p_value": float(ks.pvalue),
        "offline_p5_p95_tokens": [float(lo), float(hi)],
        "production_outside_offline_p5_p95": outside,
    }
    return LengthAnalysis(metrics, float(ks.pvalue), ratio, off_median, prod_median, outside)


def analyse_script(sides: Sides) -> ScriptAnalysis:
    """The share of texts in each script family on both sides, and their distance."""
    off_shares, prod_shares = script_shares(sides.off_texts), script_shares(sides.prod_texts)
    tv = total_variation(off_shares, prod_shares)
    metrics = {
        "offline": {k: _r(v, 4) for k, v in off_shares.items()},
        "production": {k: _r(v, 4) for k, v in prod_shares.items()},
        "total_variation": _r(tv, 4),
    }
    return ScriptAnalysis(metrics, off_shares, prod_shares, tv)


def embed_sides(ctx: ParityContext, sides: Sides, progress: Callable[[int, int], None]) -> tuple[Any, Any]:
    """Normalised sentence embeddings of the offline and the production texts (cached);
    ``progress(done, total)`` follows the texts embedded."""
    vectors = cached_embed(ctx, sides.off_texts + sides.prod_texts, progress)
    return vectors[: len(sides.off_texts)], vectors[len(sides.off_texts) :]


def analyse_embedding(ctx: ParityContext, cfg: TrafficShiftConfig, off_vec: Any, prod_vec: Any) -> EmbeddingAnalysis:
    """The MMD and coverage permutation tests on the embeddings, combined (Bonferroni), and the
    nearest-neighbour similarities and their gap."""
    np = require("numpy")
    mmd = mmd_permutation_test(off_vec, prod_vec, cfg.permutations, ctx.seed)
    coverage = coverage_permutation_test(off_vec, prod_vec, cfg.permutations, ctx.seed + 1)
    p_value = min(1.0, 2 * min(mmd["p_value"], coverage["p_value"]))
    prod_nn, _, off_nn = nearest_similarities(prod_vec, off_vec)
    gap = float(off_nn.mean() - prod_nn.mean())
    metrics = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "kernel": "gaussian",
        "bandwidth": _r(mmd["bandwidth"], 4),
        "mmd2": _r(mmd["mmd2"], 8),
        "mmd_p_value": _r(mmd["p_value"]),
        "coverage_p_value": _r(coverage["p_value"]),
        "permutations": cfg.permutations,
        "p_value": _r(p_value),
        "rejects": p_value < cfg.alpha,
        "production_to_offline_similarity": _r(prod_nn.mean(), 4),
        "offline_to_offline_similarity": _r(off_nn.mean(), 4),
        "similarity_gap": _r(gap, 4),
        "production_below_coverage_share": _r(np.mean(prod_nn < cfg.coverage_similarity), 4),
        "offline_below_coverage_share": _r(np.mean(off_nn < cfg.coverage_similarity), 4),
    }
    return EmbeddingAnalysis(metrics, off_vec, prod_vec, prod_nn, p_value, gap)


def analyse_clusters(sides: Sides, emb: EmbeddingAnalysis, cfg: TrafficShiftConfig, seed: int) -> ClusterAnalysis:
    """Seeded KMeans topics of the production embeddings, each with its coverage, examples and
    nearest offline text; uncovered clusters first, larger first."""
    np = require("numpy")
    labels, centres, moved = topic_clusters(emb.prod_vec, emb.prod_nn, cfg.clusters, seed, cfg.coverage_similarity)
    clusters = [
        _cluster(sides, emb, cfg, label, centres[label], members)
        for label in range(len(centres))
        if (members := np.flatnonzero(labels == label)).size
    ]
    clusters.sort(key=lambda c: (c["covered"], -c["size"]))
    uncovered = [c for c in clusters if not c["covered"]]
    uncovered_n = sum(c["size"] for c in uncovered)
    return ClusterAnalysis(clusters, uncovered, uncovered_n, uncovered_n / len(sides.prod), moved)


def _cluster(
    sides: Sides, emb: EmbeddingAnalysis, cfg: TrafficShiftConfig, label: int, centre: Any, members: Any
) -> dict[str, Any]:
    """One topic cluster as the metrics and evidence show it."""
    np = require("numpy")
    prod, offline = sides.prod, sides.offline
    order = members[np.argsort(-(emb.prod_vec[members] @ centre), kind="stable")]
    median = float(np.median(emb.prod_nn[members]))
    near_off = int(np.argmax(emb.off_vec @ centre))
    return {
        "cluster": label,
        "size": int(members.size),
        "share": _r(members.size / len(prod), 4),
        "nearest_offline_similarity_median": _r(median, 4),
        "covered": median >= cfg.coverage_similarity,
        "examples": [{"id": prod[i].id, "text": clip(sides.prod_texts[i])} for i in order[:EXAMPLES]],
        "nearest_offline_example": {"id": offline[near_off].id, "text": clip(sides.off_texts[near_off])},
        "request_ids": [prod[i].id for i in sorted(members)][:MAX_IDS],
    }


# --------------------------------------------------------------------------- decisions


def traffic_finding(a: Analyses) -> Finding | None:
    """``traffic_shift``: the embedding test rejects and the shift is material."""
    cfg, cl, emb = a.cfg, a.clusters, a.embedding
    material = cl.uncovered_share >= cfg.min_uncovered_share or emb.gap >= cfg.min_similarity_gap
    if not (emb.metrics["rejects"] and material):
        return None
    severity: Severity = "high" if cl.uncovered_share >= cfg.high_uncovered_share else "medium"
    total = len(a.sides.prod)
    if cl.uncovered:
        what = (
            f"{len(cl.uncovered)} production topic cluster(s) holding {cl.uncovered_share:.0%} "
            f"of requests have no close offline example"
        )
        ids = [rid for c in cl.uncovered for rid in c["request_ids"]]
    else:
        what = f"production texts are less similar to the offline set than it is to itself (gap {emb.gap:.2f})"
        ids = [r.id for r in a.sides.prod]
    evidence = {
        "rule": f"embedding test p < {cfg.alpha} and (uncovered share >= "
        f"{cfg.min_uncovered_share} or similarity gap >= {cfg.min_similarity_gap})",
        "embedding": emb.metrics,
        "uncovered_share": _r(cl.uncovered_share, 4),
        "uncovered_clusters": cl.uncovered,
        "length": a.length.metrics,
        "script": a.script.metrics,
        "request_ids": ids[:MAX_IDS],
    }
    summary = f"production traffic differs from the offline set (p={emb.p_value:.3g}): {what}"
    affected = cl.uncovered_n if cl.uncovered else total
    return Finding(NAME, "traffic_shift", severity, summary, affected=affected, total=total, evidence=evidence)


def length_finding(a: Analyses) -> Finding | None:
    """``length_shift``: the KS test rejects and one median exceeds the other by the ratio."""
    ln = a.length
    if not (ln.ks_p_value < a.cfg.alpha and ln.median_ratio > a.cfg.length_ratio):
        return None
    summary = (
        f"production requests have a median of {ln.prod_median:g} tokens, the "
        f"offline set {ln.off_median:g} (KS p={ln.ks_p_value:.3g})"
    )
    return Finding(
        NAME, "length_shift", "low", summary, affected=ln.outside, total=len(a.sides.prod), evidence={"length": ln.metrics}
    )


def language_finding(a: Analyses) -> Finding | None:
    """``language_shift``: the script shares differ by more than ``max_script_tv``."""
    sc = a.script
    if not sc.tv > a.cfg.max_script_tv:
        return None
    grown = {s for s in SCRIPTS if sc.prod_shares[s] > sc.off_shares[s]}
    affected = sum(1 for t in a.sides.prod_texts if script_of(t) in grown)
    summary = (
        f"production scripts differ from the offline set's (total variation "
        f"{sc.tv:.2f}; more {', '.join(sorted(grown))})"
    )
    severity: Severity = "medium" if sc.tv >= 0.5 else "low"
    return Finding(
        NAME, "language_shift", severity, summary, affected=affected, total=len(a.sides.prod), evidence={"script": sc.metrics}
    )


RULES: tuple[Callable[[Analyses], Finding | None], ...] = (traffic_finding, length_finding, language_finding)
"""The decision rules, in the order their findings are reported."""


# --------------------------------------------------------------------------------- check


class TrafficShift(ParityCheck[TrafficShiftConfig]):
    name = NAME
    description = (
        "compares the offline evaluation set with production traffic: length, script, "
        "embedding two-sample test, and production topics the offline set does not cover"
    )
    Config = TrafficShiftConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        """The four analyses in order (with progress), then every rule of ``RULES``."""
        cfg = self.config
        sides = self._sides(ctx, cfg)
        n_batches = -(-(len(sides.prod_texts) + len(sides.off_texts)) // EMBED_BATCH)
        steps = 4 + n_batches
        ctx.progress(0, steps, "traffic shift: counting tokens")
        length = analyse_length(ctx, sides)
        ctx.progress(1, steps, "traffic shift: script shares")
        script = analyse_script(sides)

        def embed_progress(done: int, total: int) -> None:
            ctx.progress(2 + -(-done // EMBED_BATCH), steps, "traffic shift: embedding texts")

        off_vec, prod_vec = embed_sides(ctx, sides, embed_progress)
        ctx.progress(2 + n_batches, steps, "traffic shift: permutation tests")
        embedding = analyse_embedding(ctx, cfg, off_vec, prod_vec)
        ctx.progress(3 + n_batches, steps, "traffic shift: clustering production topics")
        clusters = analyse_clusters(sides, embedding, cfg, ctx.seed)
        ctx.progress(steps, steps, "traffic shift: done")
        found = Analyses(cfg, sides, length, script, embedding, clusters)
        findings = [f for rule in RULES if (f := rule(found)) is not None]
        return CheckOutput(findings=findings, metrics=_metrics(found))

    def _sides(self, ctx: ParityContext, cfg: TrafficShiftConfig) -> Sides:
        """The seeded samples of production and offline requests that have text."""
        if ctx.offline_set is None:
            raise ConfigError(f"{NAME}: no offline evaluation set to compare with (set parity.offline_set)")
        sides = []
        for what, requests in (("production requests", ctx.requests), ("offline set", ctx.offline_set)):
            with_text = [r for r in requests if r.text().strip()]
            if len(with_text) < MIN_TEXTS:
                raise ConfigError(f"{NAME}: needs at least {MIN_TEXTS} texts in the {what}, got {len(with_text)}")
            sides.append(seeded_sample(with_text, cfg.max_texts, ctx.seed, key=lambda r: r.id))
        prod, offline = sides
        return Sides(prod, offline, [r.text() for r in prod], [r.text() for r in offline])


def _metrics(a: Analyses) -> dict[str, Any]:
    """Every measurement, findings or not (clusters without their request ids)."""
    cl = a.clusters
    return {
        "offline_texts": len(a.sides.offline),
        "production_texts": len(a.sides.prod),
        "length": a.length.metrics,
        "script": a.script.metrics,
        "embedding": a.embedding.metrics,
        "clusters": [{k: v for k, v in c.items() if k != "request_ids"} for c in cl.clusters],
        "uncovered_clusters": len(cl.uncovered),
        "uncovered_requests": cl.uncovered_n,
        "covered_requests_moved_out_of_uncovered_clusters": cl.moved,
        "uncovered_share": _r(cl.uncovered_share, 4),
    }
