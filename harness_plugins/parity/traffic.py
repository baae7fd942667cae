"""Traffic shift: is the offline evaluation set still a fair sample of production traffic?

A model can score well offline and badly in production simply because production users ask
about other things, in other languages, at other lengths.  This check compares the texts of the
offline evaluation set (``ctx.offline_set``) with a sample of production requests
(``ctx.requests``), four ways:

1. **length**: token counts (the offline pipeline's tokenizer), a two-sample Kolmogorov-Smirnov
   test, and both medians;
2. **script**: the share of texts written mainly in each Unicode script family (latin,
   cyrillic, cjk, arabic, other), and the total-variation distance between the two shares;
3. **embeddings**: all-MiniLM-L6-v2 sentence embeddings (normalised) and two seeded
   permutation tests on them: a two-sample MMD test (Gaussian kernel, median-heuristic
   bandwidth, unbiased MMD²), sensitive to any difference of the two distributions, and a
   one-sided nearest-neighbour *coverage* test whose statistic is the similarity gap: the mean
   cosine similarity of each offline text to its nearest *other* offline text (what "covered"
   looks like when the traffic is the offline set itself) minus that of each production text to
   its nearest offline text.  MMD alone has little power against a minority of production
   traffic on a new topic (a 20% shift of 150 texts gives p of about 0.01); the coverage test
   catches it.  The embedding test rejects when the Bonferroni-combined p-value
   ``min(1, 2 * min(p_mmd, p_coverage))`` is below ``alpha``;
4. **topic clusters**: seeded KMeans on the production embeddings; a cluster is *not covered*
   when the median, over its members, of the similarity to their nearest offline text is below
   ``coverage_similarity``.  Each cluster comes with its size, that median, three production
   examples (the members nearest its centre) and the offline text nearest its centre.  A
   member of an uncovered cluster that has a close offline example of its own is moved to the
   nearest covered cluster (see ``topic_clusters``), so uncovered traffic is never overstated
   by KMeans lumping a few covered requests in with a new topic.

Findings (all with ``check="traffic_shift"``):

* ``traffic_shift`` when the embedding test rejects at ``alpha`` **and** the shift is material:
  uncovered clusters hold at least ``min_uncovered_share`` of the production requests, or the
  similarity gap is at least ``min_similarity_gap``.  A test alone also flags differences too
  small to matter (with many texts, or when production is a narrower slice of what the offline
  set covers); the effect rule keeps those quiet: when production is drawn from the same data
  as the offline set, every production topic has close offline neighbours (no uncovered
  cluster) and the gap is about zero (within +-0.015 on 150 + 150 customer-support questions).
  Severity ``high`` when uncovered clusters hold at least ``high_uncovered_share`` of the
  traffic, else ``medium``.  ``affected`` is the production requests in uncovered clusters
  (all of them when the gap rule alone fired); the evidence lists each uncovered cluster with
  its examples and its request ids (the first ``MAX_IDS``; ``size`` is always exact).
* ``length_shift`` (low) when the KS test rejects at ``alpha`` and the larger median token
  count is more than ``length_ratio`` times the smaller; ``affected`` is the production
  requests outside the offline 5th-95th percentile range of token counts.
* ``language_shift`` (medium when the distance is at least 0.5, else low) when the
  total-variation distance between the script shares exceeds ``max_script_tv``; ``affected``
  is the production requests in script families that production uses more than offline.

``total`` is always the number of production requests compared (at most ``max_texts``).
The metrics carry every measurement, findings or not.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

import harness
from harness.errors import ConfigError, require
from harness.lib.data import seeded_sample
from harness.lib.embed import (
    EMBED_BATCH,
    cached_embed,
    topic_clusters,
)
from harness.lib.text import clip, token_counts
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.types import Finding, Severity
from harness.plugin.registry import Registrar

if TYPE_CHECKING:
    from harness.lib.pipeline import Request
    from harness.plugin.parity import ParityContext

NAME = "traffic_shift"
MIN_TEXTS = 20
EXAMPLES = 3
EXAMPLE_CHARS = 120
MAX_IDS = 200
"""request ids listed per cluster (as in the other parity checks; ``size`` is exact)"""
SCRIPTS = ("latin", "cyrillic", "cjk", "arabic", "other")
_CJK_PREFIXES = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC")
_SPACE = re.compile(r"\s+")


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


# --------------------------------------------------------------------------- measurements


def script_of(text: str) -> str:
    """The script family most of the text's letters belong to (``other`` when it has none)."""
    counts: Counter[str] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if name.startswith("LATIN"):
            counts["latin"] += 1
        elif name.startswith("CYRILLIC"):
            counts["cyrillic"] += 1
        elif name.startswith(_CJK_PREFIXES):
            counts["cjk"] += 1
        elif name.startswith("ARABIC"):
            counts["arabic"] += 1
        else:
            counts["other"] += 1
    return counts.most_common(1)[0][0] if counts else "other"


def script_shares(texts: Sequence[str]) -> dict[str, float]:
    counts = Counter(script_of(t) for t in texts)
    return {s: counts[s] / len(texts) for s in SCRIPTS}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def gaussian_kernel(z: Any) -> tuple[Any, float]:
    """Gaussian kernel matrix of the rows of ``z`` and its bandwidth (median heuristic: sigma is
    the median distance between distinct rows)."""
    np = require("numpy")
    z = np.asarray(z, dtype=np.float64)
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    off = d2[~np.eye(len(z), dtype=bool)]
    sigma2 = float(np.median(off)) if off.size else 1.0
    if sigma2 <= 0:
        sigma2 = 1.0
    return np.exp(-d2 / (2.0 * sigma2)), float(np.sqrt(sigma2))


def _mmd2_many(kernel: Any, labels: Any) -> Any:
    """Unbiased MMD² for each row of ``labels`` (``1`` = first sample, ``0`` = second)."""
    np = require("numpy")
    a = labels.astype(np.float64)
    b = 1.0 - a
    n = a[0].sum()
    m = b[0].sum()
    diag = np.diag(kernel)
    ka = a @ kernel
    kb = b @ kernel
    sxx = np.einsum("ij,ij->i", ka, a) - a @ diag
    syy = np.einsum("ij,ij->i", kb, b) - b @ diag
    sxy = np.einsum("ij,ij->i", ka, b)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd_permutation_test(
    x: Any, y: Any, permutations: int, seed: int, chunk: int = 250
) -> dict[str, float]:
    """Two-sample MMD test: unbiased MMD² with a Gaussian kernel, and the permutation p-value
    ``(1 + #{permuted >= observed}) / (1 + permutations)``."""
    np = require("numpy")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("the MMD test needs at least two texts on each side")
    kernel, sigma = gaussian_kernel(np.vstack([x, y]))
    labels = np.concatenate([np.ones(n, dtype=np.int8), np.zeros(m, dtype=np.int8)])
    observed = float(_mmd2_many(kernel, labels[None, :])[0])
    rng = np.random.default_rng(seed)
    exceed = 0
    done = 0
    tolerance = 1e-12
    while done < permutations:
        size = min(chunk, permutations - done)
        shuffled = rng.permuted(np.tile(labels, (size, 1)), axis=1)
        exceed += int(np.sum(_mmd2_many(kernel, shuffled) >= observed - tolerance))
        done += size
    return {
        "mmd2": observed,
        "p_value": (1 + exceed) / (1 + permutations),
        "permutations": permutations,
        "bandwidth": sigma,
    }


def _coverage_gaps(sim: Any, labels: Any) -> Any:
    """For each row of ``labels`` (``1`` = offline, ``0`` = production): the mean similarity of
    offline texts to their nearest other offline text minus that of production texts to their
    nearest offline text.  ``sim`` is the pooled similarity matrix with ``-inf`` on its diagonal."""
    np = require("numpy")
    is_off = labels.astype(bool)
    nearest = np.where(is_off[:, None, :], sim[None, :, :], -np.inf).max(axis=2)
    n_off = is_off.sum(axis=1)
    off_mean = np.where(is_off, nearest, 0.0).sum(axis=1) / n_off
    prod_mean = np.where(is_off, 0.0, nearest).sum(axis=1) / (labels.shape[1] - n_off)
    return off_mean - prod_mean


def coverage_permutation_test(
    offline: Any, prod: Any, permutations: int, seed: int, max_elements: int = 8_000_000
) -> dict[str, float]:
    """One-sided nearest-neighbour test of "the offline set does not cover production": the
    statistic is the similarity gap (offline-to-other-offline minus production-to-offline mean
    nearest-neighbour cosine similarity), its p-value ``(1 + #{permuted >= observed}) / (1 +
    permutations)`` over seeded relabellings of the pooled texts.  Much more sensitive than MMD
    to a minority of production texts far from every offline text (a new topic)."""
    np = require("numpy")
    n, m = len(offline), len(prod)
    if n < 2 or m < 1:
        raise ValueError(
            "the coverage test needs at least two offline texts and one production text"
        )
    z = np.vstack([offline, prod]).astype(np.float32)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    labels = np.concatenate([np.ones(n, dtype=np.int8), np.zeros(m, dtype=np.int8)])
    observed = float(_coverage_gaps(sim, labels[None, :])[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, max_elements // (len(z) * len(z)))
    exceed = 0
    done = 0
    tolerance = 1e-6
    while done < permutations:
        size = min(chunk, permutations - done)
        shuffled = rng.permuted(np.tile(labels, (size, 1)), axis=1)
        exceed += int(np.sum(_coverage_gaps(sim, shuffled) >= observed - tolerance))
        done += size
    return {
        "gap": observed,
        "p_value": (1 + exceed) / (1 + permutations),
        "permutations": permutations,
    }


def nearest_similarities(prod: Any, offline: Any) -> tuple[Any, Any, Any]:
    """For each production text: the cosine similarity to its nearest offline text and that
    text's index; for each offline text: the similarity to its nearest *other* offline text."""
    np = require("numpy")
    cross = prod @ offline.T
    nearest = cross.argmax(axis=1)
    prod_nn = cross[np.arange(len(prod)), nearest]
    self_sim = offline @ offline.T
    np.fill_diagonal(self_sim, -np.inf)
    offline_nn = self_sim.max(axis=1)
    return prod_nn, nearest, offline_nn


def _r(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


# --------------------------------------------------------------------------------- check


class TrafficShift(ParityCheck[TrafficShiftConfig]):
    name = NAME
    description = (
        "compares the offline evaluation set with production traffic: length, script, "
        "embedding two-sample test, and production topics the offline set does not cover"
    )
    Config = TrafficShiftConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        cfg = self.config
        np = require("numpy")
        stats = require("scipy.stats")

        prod, offline = self._sides(ctx, cfg)
        prod_texts = [r.text() for r in prod]
        off_texts = [r.text() for r in offline]
        n_batches = -(-(len(prod_texts) + len(off_texts)) // EMBED_BATCH)
        steps = 4 + n_batches

        # 1. length
        ctx.progress(0, steps, "traffic shift: counting tokens")
        prod_len = token_counts(ctx.offline.tokenizer, prod_texts)
        off_len = token_counts(ctx.offline.tokenizer, off_texts)
        ks = stats.ks_2samp(off_len, prod_len)
        off_median = float(np.median(off_len))
        prod_median = float(np.median(prod_len))
        length_ratio = max(off_median, prod_median) / max(
            min(off_median, prod_median), 1.0
        )
        lo, hi = np.percentile(off_len, [5, 95])
        outside = sum(1 for n in prod_len if n < lo or n > hi)
        length = {
            "offline_median_tokens": off_median,
            "production_median_tokens": prod_median,
            "median_ratio": _r(length_ratio, 4),
            "ks_statistic": _r(ks.statistic),
            "ks_p_value": float(ks.pvalue),
            "offline_p5_p95_tokens": [float(lo), float(hi)],
            "production_outside_offline_p5_p95": outside,
        }

        # 2. script
        ctx.progress(1, steps, "traffic shift: script shares")
        off_scripts = script_shares(off_texts)
        prod_scripts = script_shares(prod_texts)
        tv = total_variation(off_scripts, prod_scripts)
        script = {
            "offline": {k: _r(v, 4) for k, v in off_scripts.items()},
            "production": {k: _r(v, 4) for k, v in prod_scripts.items()},
            "total_variation": _r(tv, 4),
        }

        # 3. embeddings
        def embed_progress(done: int, total: int) -> None:
            ctx.progress(
                2 + -(-done // EMBED_BATCH), steps, "traffic shift: embedding texts"
            )

        vectors = cached_embed(ctx, off_texts + prod_texts, embed_progress)
        off_vec, prod_vec = vectors[: len(off_texts)], vectors[len(off_texts) :]
        ctx.progress(2 + n_batches, steps, "traffic shift: permutation tests")
        mmd = mmd_permutation_test(off_vec, prod_vec, cfg.permutations, ctx.seed)
        coverage = coverage_permutation_test(
            off_vec, prod_vec, cfg.permutations, ctx.seed + 1
        )
        p_value = min(1.0, 2 * min(mmd["p_value"], coverage["p_value"]))
        prod_nn, _, off_nn = nearest_similarities(prod_vec, off_vec)
        gap = float(off_nn.mean() - prod_nn.mean())
        embedding = {
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
            "production_below_coverage_share": _r(
                np.mean(prod_nn < cfg.coverage_similarity), 4
            ),
            "offline_below_coverage_share": _r(
                np.mean(off_nn < cfg.coverage_similarity), 4
            ),
        }

        # 4. topic clusters
        ctx.progress(
            3 + n_batches, steps, "traffic shift: clustering production topics"
        )
        labels, centres, moved = topic_clusters(
            prod_vec, prod_nn, cfg.clusters, ctx.seed, cfg.coverage_similarity
        )
        clusters: list[dict[str, Any]] = []
        for label in range(len(centres)):
            members = np.flatnonzero(labels == label)
            if members.size == 0:
                continue
            centre = centres[label]
            order = members[np.argsort(-(prod_vec[members] @ centre), kind="stable")]
            median = float(np.median(prod_nn[members]))
            near_off = int(np.argmax(off_vec @ centre))
            clusters.append(
                {
                    "cluster": label,
                    "size": int(members.size),
                    "share": _r(members.size / len(prod), 4),
                    "nearest_offline_similarity_median": _r(median, 4),
                    "covered": median >= cfg.coverage_similarity,
                    "examples": [
                        {"id": prod[i].id, "text": clip(prod_texts[i])}
                        for i in order[:EXAMPLES]
                    ],
                    "nearest_offline_example": {
                        "id": offline[near_off].id,
                        "text": clip(off_texts[near_off]),
                    },
                    "request_ids": [prod[i].id for i in sorted(members)][:MAX_IDS],
                }
            )
        clusters.sort(key=lambda c: (c["covered"], -c["size"]))
        uncovered = [c for c in clusters if not c["covered"]]
        uncovered_n = sum(c["size"] for c in uncovered)
        uncovered_share = uncovered_n / len(prod)
        ctx.progress(steps, steps, "traffic shift: done")

        metrics: dict[str, Any] = {
            "offline_texts": len(offline),
            "production_texts": len(prod),
            "length": length,
            "script": script,
            "embedding": embedding,
            "clusters": [
                {k2: v for k2, v in c.items() if k2 != "request_ids"} for c in clusters
            ],
            "uncovered_clusters": len(uncovered),
            "uncovered_requests": uncovered_n,
            "covered_requests_moved_out_of_uncovered_clusters": moved,
            "uncovered_share": _r(uncovered_share, 4),
        }
        findings: list[Finding] = []
        total = len(prod)

        material = (
            uncovered_share >= cfg.min_uncovered_share or gap >= cfg.min_similarity_gap
        )
        if embedding["rejects"] and material:
            severity: Severity = (
                "high" if uncovered_share >= cfg.high_uncovered_share else "medium"
            )
            affected = uncovered_n if uncovered else total
            if uncovered:
                what = (
                    f"{len(uncovered)} production topic cluster(s) holding {uncovered_share:.0%} "
                    f"of requests have no close offline example"
                )
            else:
                what = (
                    f"production texts are less similar to the offline set than it is to itself "
                    f"(gap {gap:.2f})"
                )
            findings.append(
                Finding(
                    check=NAME,
                    cause="traffic_shift",
                    severity=severity,
                    summary=f"production traffic differs from the offline set "
                    f"(p={p_value:.3g}): {what}",
                    affected=affected,
                    total=total,
                    evidence={
                        "rule": f"embedding test p < {cfg.alpha} and (uncovered share >= "
                        f"{cfg.min_uncovered_share} or similarity gap >= {cfg.min_similarity_gap})",
                        "embedding": embedding,
                        "uncovered_share": _r(uncovered_share, 4),
                        "uncovered_clusters": uncovered,
                        "length": length,
                        "script": script,
                        "request_ids": (
                            [rid for c in uncovered for rid in c["request_ids"]]
                            if uncovered
                            else [r.id for r in prod]
                        )[:MAX_IDS],
                    },
                )
            )

        if ks.pvalue < cfg.alpha and length_ratio > cfg.length_ratio:
            findings.append(
                Finding(
                    check=NAME,
                    cause="length_shift",
                    severity="low",
                    summary=f"production requests have a median of {prod_median:g} tokens, the "
                    f"offline set {off_median:g} (KS p={ks.pvalue:.3g})",
                    affected=outside,
                    total=total,
                    evidence={"length": length},
                )
            )

        if tv > cfg.max_script_tv:
            grown = {s for s in SCRIPTS if prod_scripts[s] > off_scripts[s]}
            affected = sum(1 for t in prod_texts if script_of(t) in grown)
            findings.append(
                Finding(
                    check=NAME,
                    cause="language_shift",
                    severity="medium" if tv >= 0.5 else "low",
                    summary=f"production scripts differ from the offline set's (total variation "
                    f"{tv:.2f}; more {', '.join(sorted(grown))})",
                    affected=affected,
                    total=total,
                    evidence={"script": script},
                )
            )
        return CheckOutput(findings=findings, metrics=metrics)

    def _sides(
        self, ctx: ParityContext, cfg: TrafficShiftConfig
    ) -> tuple[list[Request], list[Request]]:
        """The seeded samples of production and offline requests that have text."""
        if ctx.offline_set is None:
            raise ConfigError(
                f"{NAME}: no offline evaluation set to compare with (set parity.offline_set)"
            )
        sides = []
        for what, requests in (
            ("production requests", ctx.requests),
            ("offline set", ctx.offline_set),
        ):
            with_text = [r for r in requests if r.text().strip()]
            if len(with_text) < MIN_TEXTS:
                raise ConfigError(
                    f"{NAME}: needs at least {MIN_TEXTS} texts in the {what}, got {len(with_text)}"
                )
            sides.append(
                seeded_sample(with_text, cfg.max_texts, ctx.seed, key=lambda r: r.id)
            )
        return sides[0], sides[1]


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(TrafficShift)
