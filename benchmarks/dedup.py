"""Throughput, memory and accuracy of ``near_dedup`` against datasketch and rensa alone.

Records: every Bitext customer-support record (user = instruction, assistant = response) and
HH-RLHF helpful-base conversation, then generated ones up to ``--records``: "fillers" (a real
record with 40% of its words replaced, so distinct from everything) and, for 15% of the
records, near-duplicate "variants" (a real record or filler with 0.5-5% of its words edited,
so their Jaccard with the source spreads across the threshold).  All shuffled, seeded.

Three ways of finding the near-duplicate pairs, each in its own subprocess (a clean peak RSS),
one after the other, on the same records with the same shingles (word bigrams (the defaults; ``--shingle``) of the
normalised user and assistant turns with role markers, ``near_dedup``'s definition):

* ``near_dedup``: our filter end to end, ``NearDedup.apply`` (verification on);
* ``datasketch``: ``MinHash.bulk`` over the shingle strings and ``MinHashLSH`` at the threshold
  (its own band choice), insertion session, one query per record; candidates are the answer;
* ``rensa``: rensa alone, ``RMinHash.from_token_sets`` over the shingle strings,
  ``RMinHashLSH`` with the same bands as ours, ``query_all``, and the signature estimate
  ``>= threshold`` as the answer (what rensa's own deduplicator does); no exact verification.

Accuracy is measured on sampled pairs against the exact Jaccard of the shingle sets: all
planted (variant, source) pairs plus up to 2,000 random other pairs reported by any method.
Recall: of the sampled pairs at or above the threshold, the share a method reports; precision:
of the sampled pairs a method reports, the share at or above the threshold.  Peak memory is the
worker's peak RSS (``ru_maxrss``) above its RSS once the records are loaded.  CPU seconds are
printed beside wall seconds: on a shared machine they are the steadier comparison.  Nothing is
asserted.

datasketch and rensa get the shingles as Python strings (``shingle_strings``), which is how
their APIs take them; ``near_dedup`` hashes the same shingles with numpy and never builds
those strings, which is most of its lead over rensa alone.

    python benchmarks/dedup.py [--records 100000] [--quick] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from harness.plugin.components import RunContext
from harness.lib.data import data_dir
from harness.types import Conversation, Message
from harness.lib.minhash import NearDupIndex, choose_bands, jaccard, shingle_strings
from harness_plugins.filters.near_dedup import NearDedup
from harness_plugins.readers.formats import CsvReader, ShareGPTReader

METHODS = ("near_dedup", "datasketch", "rensa")
BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
VARIANT_SHARE = 0.15
FILLER_REWRITE = 0.4
RANDOM_PAIRS = 2000

Record = tuple[str, tuple[tuple[str, str], ...]]
"""A record as pickled for the workers: (source id, ((role, content), ...))."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.75)
    parser.add_argument("--shingle", type=int, default=2)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


# ---------------------------------------------------------------------------------- the records


def real_records() -> list[Conversation]:
    ctx = RunContext(Path.cwd(), Path.cwd())
    root = data_dir()
    csv = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    sharegpt = ShareGPTReader(ShareGPTReader.Config(), ctx)
    out = [r for r in csv.read(root / BITEXT, "bitext") if isinstance(r, Conversation)]
    return out + [r for r in sharegpt.read(root / HH, "hh") if isinstance(r, Conversation)]


def rewrite(record: Conversation, source_id: str, rate: float, rng: random.Random, vocab: Sequence[str]) -> Conversation:
    """A copy with ``max(1, round(rate * words))`` word edits (substitution, deletion or
    insertion, a third each) over its user and assistant turns."""
    turns = [m.content.split() if m.role != "system" else None for m in record.messages]
    slots = [t for t, words in enumerate(turns) for _ in (words or ())]
    for _ in range(max(1, round(rate * len(slots)))):
        words = turns[rng.choice(slots)]
        assert words is not None
        i, op = rng.randrange(len(words)), rng.choice("sdi")
        if op == "s":
            words[i] = rng.choice(vocab)
        elif op == "d" and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    messages = tuple(
        Message(m.role, m.content if words is None else " ".join(words)) for m, words in zip(record.messages, turns)
    )
    return Conversation(messages, source_id)


def build(n: int, seed: int) -> tuple[list[Conversation], list[tuple[str, str]]]:
    """``n`` shuffled records and the planted (variant id, source id) pairs."""
    rng = random.Random(seed)
    real = real_records()
    vocab = sorted({w for r in real for m in r.messages for w in m.content.split()})
    n_variants = round(VARIANT_SHARE * n)
    base = real[: max(0, n - n_variants)]
    while len(base) < n - n_variants:
        k = len(base) - len(real)
        base.append(rewrite(rng.choice(real), f"filler:{k}", FILLER_REWRITE, rng, vocab))
    planted = []
    records = list(base)
    for k in range(n_variants):
        source = rng.choice(base)
        variant = rewrite(source, f"variant:{k}", rng.uniform(0.005, 0.05), rng, vocab)
        records.append(variant)
        planted.append((variant.source_id, source.source_id))
    rng.shuffle(records)
    return records, planted


def dump(records: Sequence[Conversation], path: Path) -> None:
    rows: list[Record] = [(r.source_id, tuple((m.role, m.content) for m in r.messages)) for r in records]
    path.write_bytes(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))


def load(path: Path) -> list[Conversation]:
    rows: list[Record] = pickle.loads(path.read_bytes())
    return [Conversation(tuple(Message(role, text) for role, text in turns), sid) for sid, turns in rows]


# ------------------------------------------------------------------------------------ the methods


class _Recording(NearDedup):
    """``NearDedup`` that keeps the index ``apply`` computed (for the accuracy figures)."""

    last: NearDupIndex

    def index(self, records: Sequence[Conversation]) -> NearDupIndex:
        self.last = super().index(records)
        return self.last


def run_ours(records: list[Conversation], args: argparse.Namespace) -> dict[str, Any]:
    ctx = RunContext(Path.cwd(), Path.cwd())
    config = NearDedup.Config(threshold=args.threshold, shingle=args.shingle, num_perm=args.num_perm)
    flt = _Recording(config, ctx)
    result = flt.apply(records)
    index = flt.last
    return {
        "removed": len(result.dropped),
        "node_of": np.asarray(index.node_of, dtype=np.int64),
        "node_pairs": np.asarray([(a, b) for a, b, _ in index.pairs], dtype=np.int64).reshape(-1, 2),
        "first": np.asarray(index.first, dtype=np.int64),
    }


def _shingles(records: Sequence[Conversation], args: argparse.Namespace) -> list[set[str]]:
    return [shingle_strings(r, "both", args.shingle) for r in records]


def run_datasketch(records: list[Conversation], args: argparse.Namespace) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    tokens = [[s.encode() for s in shingles] for shingles in _shingles(records, args)]
    minhashes = MinHash.bulk(tokens, num_perm=args.num_perm, seed=args.seed)
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            if tokens[i]:
                session.insert(i, m, check_duplication=False)
    pairs = [(j, i) for i, m in enumerate(minhashes) if tokens[i] for j in lsh.query(m) if j < i]
    return {"pairs": np.asarray(pairs, dtype=np.int64).reshape(-1, 2), "bands": f"{lsh.b}x{lsh.r}"}


def run_rensa(records: list[Conversation], args: argparse.Namespace) -> dict[str, Any]:
    from rensa import RMinHash, RMinHashLSH

    shingles = _shingles(records, args)
    keys = [i for i, s in enumerate(shingles) if s]
    minhashes = RMinHash.from_token_sets([shingles[i] for i in keys], num_perm=args.num_perm, seed=args.seed)
    bands, rows = choose_bands(args.threshold, args.num_perm)
    lsh = RMinHashLSH(args.threshold, args.num_perm, bands)
    lsh.insert_many(minhashes, 0)
    pairs = [
        (keys[j], keys[i])
        for i, found in enumerate(lsh.query_all(minhashes))
        for j in found
        if j < i and minhashes[i].jaccard(minhashes[j]) >= args.threshold
    ]
    return {"pairs": np.asarray(pairs, dtype=np.int64).reshape(-1, 2), "bands": f"{bands}x{rows}"}


RUNNERS = {"near_dedup": run_ours, "datasketch": run_datasketch, "rensa": run_rensa}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> None:
    records = load(Path(args.data))
    gc.collect()
    baseline = rss_mb()
    began_wall, began_cpu = time.perf_counter(), time.process_time()
    out = RUNNERS[args.worker](records, args)
    out["seconds"] = time.perf_counter() - began_wall
    out["cpu"] = time.process_time() - began_cpu
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    Path(args.out).write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))


def spawn(method: str, data: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = folder / f"{method}.pkl"
    command = [
        sys.executable, __file__, "--worker", method, "--data", str(data), "--out", str(out),
        "--seed", str(args.seed), "--threshold", str(args.threshold), "--shingle", str(args.shingle),
        "--num-perm", str(args.num_perm),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return pickle.loads(out.read_bytes())


# ------------------------------------------------------------------------------------- accuracy


class Reported:
    """Membership test for the pairs a method reports as near-duplicates."""

    def __init__(self, method: str, out: dict[str, Any]) -> None:
        self.node_of: np.ndarray | None = None
        if method == "near_dedup":
            self.node_of = out["node_of"]
            self.set = {(int(a), int(b)) for a, b in out["node_pairs"]}
            first = out["first"]
            same = [(int(first[n]), i) for i, n in enumerate(self.node_of.tolist()) if n >= 0 and first[n] != i]
            node_pairs = [(int(first[a]), int(first[b])) for a, b in self.set]
            self.examples = same + node_pairs
        else:
            self.set = {(int(a), int(b)) for a, b in out["pairs"]}
            self.examples = list(self.set)

    def __contains__(self, pair: tuple[int, int]) -> bool:
        i, j = min(pair), max(pair)
        if self.node_of is None:
            return (i, j) in self.set
        a, b = int(self.node_of[i]), int(self.node_of[j])
        if a < 0 or b < 0:
            return False
        return a == b or (min(a, b), max(a, b)) in self.set

    def __len__(self) -> int:
        return len(self.examples)


def accuracy(
    records: Sequence[Conversation],
    planted: list[tuple[str, str]],
    reported: dict[str, Reported],
    args: argparse.Namespace,
) -> tuple[dict[str, tuple[float, float]], int, int]:
    """(precision, recall) per method on the sampled pairs; also the sample size and positives."""
    where = {r.source_id: i for i, r in enumerate(records)}
    sample = {(min(where[a], where[b]), max(where[a], where[b])) for a, b in planted}
    found = sorted({(min(p), max(p)) for rep in reported.values() for p in rep.examples} - sample)
    rng = random.Random(args.seed)
    sample |= set(rng.sample(found, min(RANDOM_PAIRS, len(found))))
    cache: dict[int, set[str]] = {}

    def shingles(i: int) -> set[str]:
        if i not in cache:
            cache[i] = shingle_strings(records[i], "both", args.shingle)
        return cache[i]

    positive = {p for p in sample if jaccard(shingles(p[0]), shingles(p[1])) >= args.threshold}
    scores = {}
    for method, rep in reported.items():
        said = {p for p in sample if p in rep}
        hits = len(said & positive)
        scores[method] = (hits / len(said) if said else float("nan"), hits / len(positive))
    return scores, len(sample), len(positive)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    n = 10_000 if args.quick else args.records
    methods = [m for m in args.methods.split(",") if m]
    print(
        f"{n:,} records, word {args.shingle}-grams, threshold {args.threshold}, {args.num_perm} permutations; "
        f"rensa {version('rensa')}, datasketch {version('datasketch')}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    began = time.perf_counter()
    records, planted = build(n, args.seed)
    print(f"built in {time.perf_counter() - began:.0f} s: {len(planted):,} planted near-duplicate variants")
    outs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as folder:
        data = Path(folder) / "records.pkl"
        dump(records, data)
        for method in methods:
            outs[method] = spawn(method, data, Path(folder), args)
            print(f"  {method}: {outs[method]['seconds']:.1f} s")
    reported = {m: Reported(m, out) for m, out in outs.items()}
    scores, n_sample, n_positive = accuracy(records, planted, reported, args)

    print(f"\naccuracy on {n_sample:,} sampled pairs ({n_positive:,} with exact Jaccard >= {args.threshold})")
    header = f"{'method':12s} {'wall s':>8s} {'cpu s':>8s} {'docs/s':>9s} {'peak MB':>8s} {'pairs':>9s} {'P':>6s} {'R':>6s}  note"
    print(header)
    print("-" * len(header))
    ours = outs.get("near_dedup")
    for method, out in outs.items():
        precision, recall = scores[method]
        note = f"bands {out['bands']}" if "bands" in out else f"{out['removed']:,} removed"
        if ours is not None and method != "near_dedup":
            wall, cpu = out["seconds"] / ours["seconds"], out["cpu"] / ours["cpu"]
            note += f"; near_dedup {wall:.1f}x faster (wall), {cpu:.1f}x (cpu)"
        print(
            f"{method:12s} {out['seconds']:8.1f} {out['cpu']:8.1f} {n / out['seconds']:9,.0f} "
            f"{out['peak_mb']:8.0f} {len(reported[method]):9,d} {precision:6.3f} {recall:6.3f}  {note}"
        )


if __name__ == "__main__":
    main()
