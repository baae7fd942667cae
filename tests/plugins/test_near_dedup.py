"""The near_dedup filter on real records with planted near-duplicates, and on small built cases.

Real data: 1,000 Bitext customer-support records (user = instruction, assistant = response) and
300 HH-RLHF helpful-base conversations, plus 150 planted copies of random originals with seeded
word edits (substitutions, deletions, insertions).  Ground truth is the exact Jaccard of the
reference shingle sets (``shingle_strings``), independent of the MinHash machinery.

Word 5-gram shingles turn a word edit into up to five changed shingles, so copies with 5% of
their words edited have a Jaccard of about 0.65 under the defaults (5-grams, 0.8): they are not
near-duplicates at that setting.  The planted-copy checks therefore run twice: the defaults
against ~2% edits, and word bigrams (``shingle: 2``, Jaccard about 0.85) against ~5% edits.
Recall counts the planted copies whose exact Jaccard with their original reaches the threshold.
"""

from __future__ import annotations

import difflib
import random
import re
from collections import Counter
from collections.abc import Sequence

import pytest

from harness.plugin.components import RunContext
from harness.lib.data import data_dir, seeded_sample
from harness.types import Conversation, Message
from harness_plugins.filters import near_dedup
from harness_plugins.filters.basic import normalise
from harness.lib import minhash
from harness.lib.minhash import choose_bands, jaccard, shingle_hashes, shingle_strings
from harness_plugins.filters.near_dedup import NearDedup
from harness_plugins.readers.formats import CsvReader, ShareGPTReader

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
N_PLANTED = 150
DETAIL = re.compile(r"^jaccard (\d\.\d\d) with (.+)$")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    path = tmp_path_factory.mktemp("near_dedup")
    return RunContext(path, path / "work")


def source_id(record: Conversation) -> str:
    return record.source_id


@pytest.fixture(scope="module")
def real(ctx) -> list[Conversation]:
    """1,000 Bitext and 300 HH-RLHF records, a seeded sample of each, in file order."""
    root = data_dir()
    csv = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    bitext = [r for r in csv.read(root / BITEXT, "bitext.csv") if isinstance(r, Conversation)]
    sharegpt = ShareGPTReader(ShareGPTReader.Config(), ctx)
    hh = [r for r in sharegpt.read(root / HH, "hh.jsonl") if isinstance(r, Conversation)]
    return seeded_sample(bitext, 1000, 0, source_id) + seeded_sample(hh, 300, 0, source_id)


def edit(record: Conversation, rate: float, rng: random.Random, vocab: Sequence[str]) -> Conversation:
    """A copy with ``max(1, round(rate * words))`` word edits spread over the user and
    assistant turns: a third each substitutions, deletions and insertions."""
    turns = [m.content.split() if m.role in ("user", "assistant") else None for m in record.messages]
    slots = [(t, i) for t, words in enumerate(turns) if words for i in range(len(words))]
    for _ in range(max(1, round(rate * len(slots)))):
        t, _ = rng.choice(slots)
        words = turns[t]
        assert words is not None
        i = rng.randrange(len(words))
        op = rng.choice("sdi")
        if op == "s":
            words[i] = rng.choice(vocab)
        elif op == "d" and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    messages = tuple(
        Message(m.role, " ".join(words) if words is not None else m.content)
        for m, words in zip(record.messages, turns)
    )
    return Conversation(messages, record.source_id)


def plant(
    records: list[Conversation], rate: float, seed: int = 0
) -> tuple[list[Conversation], dict[str, str]]:
    """``records`` with ``N_PLANTED`` edited copies of distinct random originals, each copy at a
    random place after its original; returns the data and ``{copy id: original id}``."""
    rng = random.Random(seed)
    vocab = sorted({w for r in records for m in r.messages for w in m.content.split()})
    keyed: list[tuple[float, Conversation]] = [(float(i), r) for i, r in enumerate(records)]
    planted: dict[str, str] = {}
    for k, i in enumerate(sorted(rng.sample(range(len(records)), N_PLANTED))):
        original = records[i]
        copy_id = f"planted:{k}:{original.source_id}"
        copy = edit(original, rate, rng, vocab)
        keyed.append((rng.uniform(i + 0.5, len(records)), Conversation(copy.messages, copy_id)))
        planted[copy_id] = original.source_id
    keyed.sort(key=lambda pair: pair[0])
    return [r for _, r in keyed], planted


def shingles_of(records: Sequence[Conversation], config) -> dict[str, set[str]]:
    return {r.source_id: shingle_strings(r, config.scope, config.shingle) for r in records}


SCENARIOS = {
    # name: (config options, planted edit rate)
    "defaults, 2% edits": ({}, 0.02),
    "bigrams, 5% edits": ({"shingle": 2}, 0.05),
}


@pytest.fixture(scope="module", params=list(SCENARIOS), ids=list(SCENARIOS))
def run(request, real, ctx):
    options, rate = SCENARIOS[request.param]
    data, planted = plant(real, rate)
    flt = NearDedup(NearDedup.Config(**options), ctx)
    return data, planted, flt, flt.apply(data)


def test_planted_near_duplicates_are_found(run):
    data, planted, flt, result = run
    cfg = flt.config
    sets = shingles_of(data, cfg)
    similar = {c for c, o in planted.items() if jaccard(sets[c], sets[o]) >= cfg.threshold}
    dropped = {d.source_id for d in result.dropped}
    recall = len(similar & dropped) / len(similar)
    assert len(similar) >= 0.7 * N_PLANTED, f"only {len(similar)} planted copies are near-duplicates"
    assert recall >= 0.95, f"recall {recall:.3f} of {len(similar)} planted near-duplicates"


def test_clean_records_are_rarely_removed(run):
    """A removed record that is not a planted copy is a false positive when its exact Jaccard
    with the record named as kept is below the threshold (Bitext has genuinely near-identical
    templated records: those are true positives)."""
    data, planted, flt, result = run
    cfg = flt.config
    sets = shingles_of(data, cfg)
    false_positives = []
    for d in result.dropped:
        kept_id = DETAIL.match(d.detail).group(2)
        if d.source_id not in planted and jaccard(sets[d.source_id], sets[kept_id]) < cfg.threshold:
            false_positives.append(d)
    clean = len(data) - len(planted)
    assert len(false_positives) <= 0.02 * clean, false_positives[:5]


def test_every_drop_names_a_kept_record_it_matches(run):
    data, _, flt, result = run
    sets = shingles_of(data, flt.config)
    kept = {r.source_id for r in result.kept}
    order = {r.source_id: i for i, r in enumerate(data)}
    for d in result.dropped:
        assert (d.filter, d.reason) == ("near_dedup", "near_duplicate")
        match = DETAIL.match(d.detail)
        assert match, d.detail
        shown, kept_id = float(match.group(1)), match.group(2)
        assert kept_id in kept and order[kept_id] < order[d.source_id]
        true = jaccard(sets[d.source_id], sets[kept_id])
        assert true >= flt.config.threshold and abs(true - shown) <= 0.005 + 1e-9, d


def test_every_input_appears_exactly_once(run, ctx):
    data, _, flt, result = run
    ids = Counter(r.source_id for r in data)
    assert len(ids) == len(data)
    assert Counter(r.source_id for r in result.kept) + Counter(d.source_id for d in result.dropped) == ids
    assert result.quarantined == []
    kept_ids = [r.source_id for r in result.kept]
    assert kept_ids == [r.source_id for r in data if r.source_id in set(kept_ids)]  # input order

    options = flt.config.model_dump() | {"action": "quarantine"}
    quarantined = NearDedup(NearDedup.Config(**options), ctx).apply(data)
    assert quarantined.dropped == []
    assert [r.source_id for r in quarantined.kept] == kept_ids
    assert [q.source_id for q in quarantined.quarantined] == [d.source_id for d in result.dropped]
    first = quarantined.quarantined[0]
    assert (first.filter, first.reason, first.detail) == ("near_dedup", "near_duplicate", result.dropped[0].detail)
    assert first.source_id in first.raw


def test_the_curate_ledger_balances(run, ctx):
    """Run as the curate stage runs a filter: its accounting check passes, reasons are counted."""
    from harness.stages.curate import FilterStep, curate_records
    from harness.types import Ledger

    data, _, flt, result = run
    ledger = Ledger()
    kept = curate_records(list(data), [FilterStep(flt, "test")], ledger)
    (stage,) = ledger.stages
    assert ledger.balanced and len(kept) == stage.kept == len(result.kept)
    assert dict(stage.reasons) == {"near_duplicate": len(result.dropped)}


def test_registers_itself():
    added = []

    class Registrar:
        def add(self, component):
            added.append(component)

    near_dedup.harness_register_filters(Registrar())
    assert added == [NearDedup] and NearDedup.name == "near_dedup"


# ------------------------------------------------------------------------------ built cases


def conv(source_id: str, *turns: str, system: str | None = None) -> Conversation:
    roles = ["user", "assistant"] * len(turns)
    messages = [Message("system", system)] if system else []
    messages += [Message(role, text) for role, text in zip(roles, turns)]
    return Conversation(tuple(messages), source_id)


@pytest.fixture
def dedup(ctx):
    return lambda **options: NearDedup(NearDedup.Config(**options), ctx)


PROMPT = "How do I reset the password of my account when I no longer have access to the email address?"
ANSWER = (
    "Open the sign-in page, choose 'Forgot password', and pick the option to verify your identity "
    "with your phone number instead of the email address; we will text you a one-time code."
)
OTHER_ANSWER = (
    "Please contact our support team through the live chat on the website, and an agent will "
    "check your identity documents before moving the account to a new email address for you."
)
OTHER_PROMPT = "I forgot my password and the recovery email is gone; what can I do to get back in?"


def test_prompt_and_response_scopes_compare_different_turns(dedup):
    records = [
        conv("a", PROMPT, ANSWER),
        conv("b", PROMPT, OTHER_ANSWER),  # same question, another answer
        conv("c", OTHER_PROMPT, ANSWER),  # another question, same answer
    ]
    prompt = dedup(scope="prompt").apply(records)
    response = dedup(scope="response").apply(records)
    both = dedup(scope="both").apply(records)

    assert [(d.source_id, d.detail) for d in prompt.dropped] == [("b", "jaccard 1.00 with a")]
    assert [(d.source_id, d.detail) for d in response.dropped] == [("c", "jaccard 1.00 with a")]
    assert both.dropped == [] and [r.source_id for r in both.kept] == ["a", "b", "c"]


def test_both_scope_tells_roles_apart_and_ignores_system_turns(dedup):
    swapped = [conv("a", PROMPT, ANSWER), conv("b", ANSWER, PROMPT)]
    # word 5-grams: the role markers change enough shingles; word bigrams (the defaults) change
    # only the few around each marker, so a role swap of a long pair stays above 0.75
    assert dedup(shingle=5, threshold=0.8).apply(swapped).dropped == []
    assert dedup().apply(swapped).dropped[0].detail == "jaccard 0.89 with a"
    system = [conv("a", PROMPT, ANSWER, system="Be brief."), conv("b", PROMPT, ANSWER, system="Be kind.")]
    assert [d.detail for d in dedup().apply(system).dropped] == ["jaccard 1.00 with a"]


def test_normalisation_and_exact_copies(dedup):
    records = [
        conv("a", PROMPT, ANSWER),
        conv("b", PROMPT.upper(), "  " + ANSWER.replace(" ", "\n ")),
        conv("c", PROMPT, ANSWER),
    ]
    result = dedup().apply(records)
    assert [r.source_id for r in result.kept] == ["a"]
    assert [d.detail for d in result.dropped] == ["jaccard 1.00 with a"] * 2


def test_shingles_are_word_grams_of_the_exact_dedup_normalisation(dedup):
    text = "Ｆｕｌｌ\u00a0width\u3000STRASSE stra\u00dfe \ufb01ne\u2028line\x85next \u2029 end\x1fok"
    record = conv("a", text, "fine")
    words = ["<user>", *normalise(text).split(), "<assistant>", "fine"]
    assert words[1:4] == ["full", "width", "strasse"] and "fine" in words[4:]
    assert shingle_strings(record, "both", 2) == {" ".join(words[i : i + 2]) for i in range(len(words) - 1)}
    repeated = conv("b", "x " * 3, "y")  # "<user> x", "x x", "x <assistant>", "<assistant> y"
    sets = shingle_hashes([record, repeated], "both", 2)
    assert sets.sizes().tolist() == [len(words) - 1, 4]
    assert dedup(shingle=2).apply([record, conv("c", normalise(text), "FINE")]).dropped[0].detail == "jaccard 1.00 with a"


def test_short_texts_use_character_grams(dedup):
    records = [conv("a", "hi", "hello there"), conv("b", "hi", "hello there"), conv("c", "hey", "hello")]
    assert shingle_strings(records[0], "both", 5) == {
        g for g in ("hi\nhe", "i\nhel", "\nhell", "hello", "ello ", "llo t", "lo th", "o the", " ther", "there")
    }
    result = dedup().apply(records)
    assert [d.source_id for d in result.dropped] == ["b"]
    assert [r.source_id for r in result.kept] == ["a", "c"]


def test_records_without_text_in_scope_are_kept(dedup):
    records = [conv("a", "", ANSWER), conv("b", "", OTHER_ANSWER), conv("c", "   ", ANSWER)]
    result = dedup(scope="prompt").apply(records)
    assert [r.source_id for r in result.kept] == ["a", "b", "c"]
    no_user = [
        Conversation((Message("system", "Be brief."), Message("assistant", ANSWER)), sid) for sid in "xy"
    ]
    assert [r.source_id for r in dedup(scope="prompt").apply(no_user).kept] == ["x", "y"]
    assert [d.source_id for d in dedup(scope="response").apply(no_user).dropped] == ["y"]
    assert dedup().apply([]).kept == []
    blank = [conv("p", "", " "), conv("q", " ", "")]  # only the role markers would be left
    for shingle in (1, 2, 5):
        assert shingle_hashes(blank, "both", shingle).sizes().tolist() == [0, 0]
        assert dedup(shingle=shingle).apply(blank).dropped == []


def test_chains_drop_only_against_a_kept_match(dedup):
    """A~B and B~C but not A~C: B goes (against A), C stays (its only match B was removed)."""
    words = [f"w{i}" for i in range(40)]
    b = words[:5] + ["x1", "x2"] + words[7:]
    c = b[:20] + ["y1", "y2"] + b[22:]
    records = [conv(name, " ".join(text), "ok") for name, text in (("A", words), ("B", b), ("C", c))]
    flt = dedup(scope="prompt", shingle=1, threshold=0.85)
    sets = [shingle_strings(r, "prompt", 1) for r in records]
    assert jaccard(sets[0], sets[1]) >= 0.85 and jaccard(sets[1], sets[2]) >= 0.85
    assert jaccard(sets[0], sets[2]) < 0.85
    result = flt.apply(records)
    assert [r.source_id for r in result.kept] == ["A", "C"]
    assert [d.detail for d in result.dropped] == [f"jaccard {jaccard(sets[0], sets[1]):.2f} with A"]


def test_estimates_without_verification(dedup, real):
    data, _ = plant(real[:300], 0.02, seed=1)
    result = dedup(verify=False).apply(data)
    assert result.dropped and all(d.detail.startswith("estimated jaccard ") for d in result.dropped)
    assert len(result.kept) + len(result.dropped) == len(data)


def test_deterministic(dedup, real):
    data, _ = plant(real[:400], 0.02, seed=2)
    assert dedup().apply(data) == dedup().apply(data)


def test_chunking_does_not_change_the_result(dedup, real, monkeypatch):
    """Records are shingled and signed chunk by chunk: pairs across chunks are found alike."""
    data, _ = plant(real[:600], 0.02, seed=3)
    whole = dedup().apply(data)
    monkeypatch.setattr(minhash, "CHUNK", 97)
    assert dedup().apply(data) == whole
    assert len(whole.dropped) >= 0.9 * N_PLANTED


def test_banding():
    assert choose_bands(0.8, 128) == (16, 8)
    bands, rows = choose_bands(0.5, 64)
    assert bands * rows == 64
    assert choose_bands(1.0, 128) == (1, 128)


def test_config_is_validated(dedup):
    from pydantic import ValidationError

    for bad in ({"scope": "system"}, {"threshold": 0}, {"threshold": 1.5}, {"shingle": 0}, {"extra": 1}):
        with pytest.raises(ValidationError):
            dedup(**bad)


# --------------------------------------------------------------------- the defaults, as measured


def _words(record: Conversation) -> list[str]:
    return " ".join(m.content for m in record.messages if m.role in ("user", "assistant")).casefold().split()


def _edit_similarity(a: Conversation, b: Conversation) -> float:
    """Word-level edit similarity (difflib's ratio): the reference for "a near-duplicate"."""
    return difflib.SequenceMatcher(None, _words(a), _words(b), autojunk=False).ratio()


@pytest.fixture(scope="module")
def clean_2000(ctx) -> list[Conversation]:
    """1,000 Bitext and 1,000 HH-RLHF records with none that is an edit-similar (>= 0.85) copy of
    another: candidates come from a permissive detector (word unigrams, Jaccard 0.5), the
    decision from the edit similarity, so the set does not depend on the defaults under test."""
    root = data_dir()
    csv = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    bitext = [r for r in csv.read(root / BITEXT, "bitext.csv") if isinstance(r, Conversation)]
    hh = [r for r in ShareGPTReader(ShareGPTReader.Config(), ctx).read(root / HH, "hh.jsonl") if isinstance(r, Conversation)]
    pool = seeded_sample(bitext, 1100, 1, source_id) + seeded_sample(hh, 1100, 1, source_id)
    by_id = {r.source_id: r for r in pool}
    permissive = NearDedup(NearDedup.Config(shingle=1, threshold=0.5), ctx).apply(pool)
    copies = {d.source_id for d in permissive.dropped
              if _edit_similarity(by_id[d.source_id], by_id[DETAIL.match(d.detail).group(2)]) >= 0.85}  # type: ignore[union-attr]
    kept = [r for r in pool if r.source_id not in copies]
    return [r for r in kept if r.source_id.startswith("bitext")][:1000] + [r for r in kept if r.source_id.startswith("hh")][:1000]


def test_defaults_find_copies_with_up_to_5_percent_of_words_edited(real, ctx):
    """Every planted copy counts (not only those above the threshold): edits of 0.5-5% of words."""
    rng = random.Random(5)
    vocab = sorted({w for r in real for m in r.messages for w in m.content.split()})
    originals = rng.sample(real, 200)
    copies = [Conversation(edit(o, rng.uniform(0.005, 0.05), rng, vocab).messages, f"copy:{k}") for k, o in enumerate(originals)]
    dropped = {d.source_id for d in NearDedup(NearDedup.Config(), ctx).apply(real + copies).dropped}
    recall = sum(c.source_id in dropped for c in copies) / len(copies)
    assert recall >= 0.95, f"recall {recall:.3f} at the defaults"


def test_defaults_remove_nothing_from_2000_clean_records(clean_2000, ctx):
    assert len(clean_2000) == 2000
    dropped = NearDedup(NearDedup.Config(), ctx).apply(clean_2000).dropped
    assert dropped == [] or list(dropped) == [], [d.detail for d in dropped][:5]
