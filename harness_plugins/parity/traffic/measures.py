"""The measurements of the traffic-shift check: script families, the two seeded permutation
tests on sentence embeddings (MMD and nearest-neighbour coverage) and nearest similarities.
Pure functions of their inputs (numpy arrays and texts); ``check`` decides with them."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.errors import require

SCRIPTS = ("latin", "cyrillic", "cjk", "arabic", "other")
_CJK_PREFIXES = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC")


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
