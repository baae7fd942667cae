"""Planted drifts: with the offline pipeline otherwise matching production, each drift is found by
its own check, with the right cause and evidence, and every other check stays quiet.  A fully
matched configuration yields no finding at all.

Real model (SmolLM2's tokenizer, template and weights), real traffic (Bitext customer-support
chats, HH-RLHF conversations), through ``harness parity`` and its JSON report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from logs import hh_requests, support_requests, write_log

from harness.cli import main

pytestmark = pytest.mark.integration

SYSTEM = "You are ACME's customer-support assistant. Be concise."
SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string"}},
    "required": ["category"],
    "additionalProperties": False,
}
MATCHED = {"sampling": {"temperature": 0, "max_tokens": 12}, "postprocess": {"parser": "contains"}}
CHECKS = {
    "template": "template",
    "preprocessing": "preprocessing",
    "sampling": {"name": "sampling", "requests": 12, "samples": 3, "max_tokens": 12},
    "postprocessing": {"name": "postprocessing", "requests": 24, "max_tokens": 12},
    "traffic_shift": "traffic_shift",
}
DRIFTS: dict[str, tuple[dict[str, Any], set[tuple[str, str]]]] = {
    "matched": ({}, set()),
    "system_prompt": ({"system_prompt": SYSTEM}, {("template", "system_prompt")}),
    "double_bos": ({"add_bos": True}, {("template", "double_bos")}),
    "sampling": (
        {"sampling": {"max_tokens": 12, "generation_config": "generation_config.json"}},
        {("sampling", "sampling_params")},
    ),
    "truncation": ({"preprocess": {"max_input_tokens": 256}}, {("preprocessing", "truncation")}),
    "strict_json": (
        {"postprocess": {"parser": "json", "field": "category", "schema": SCHEMA}},
        {("postprocessing", "strict_parser")},
    ),
    "traffic": ({}, {("traffic_shift", "traffic_shift")}),
}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("parity-logs")
    write_log(tmp / "support.jsonl", support_requests(48, seed=7))
    write_log(tmp / "offline.jsonl", support_requests(150, seed=7, skip=48))
    write_log(tmp / "hh.jsonl", hh_requests(150))
    # production's server takes its sampling defaults from the model's generation_config.json
    (tmp / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "top_p": 0.9, "eos_token_id": 2}))
    return tmp


def run_parity(logs: Path, tmp: Path, drift: str) -> dict[str, Any]:
    production_changes, _ = DRIFTS[drift]
    production = {**MATCHED, **production_changes}
    suite = {
        "name": f"parity-{drift}",
        "model": "smollm2-135m-instruct",
        "parity": {
            "requests": {"path": str(logs / ("hh.jsonl" if drift == "traffic" else "support.jsonl")), "format": "openai_requests"},
            "offline_set": {"path": str(logs / "offline.jsonl"), "format": "openai_requests"},
            "offline": MATCHED,
            "production": production,
            "checks": CHECKS,
            "gate": {"fail_on": "high"},
        },
        "report": ["json", "junit"],
    }
    if drift == "sampling":
        (tmp / "generation_config.json").write_text((logs / "generation_config.json").read_text())
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    code = main(["parity", str(path), "--reports", str(tmp / "reports"), "--store", str(logs / "store")])
    (report,) = (tmp / "reports").iterdir()
    result = json.loads((report / "result.json").read_text())
    result["exit"] = code
    result["junit"] = (report / "junit.xml").read_text()
    return result


def findings(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["check"], f["cause"]): f for c in result["parity"]["checks"] for f in c["findings"]}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_each_drift_is_found_by_its_check_alone(drift: str, logs: Path, tmp_path: Path, harness_embedded_model_dir: Path) -> None:
    result = run_parity(logs, tmp_path, drift)
    checks = result["parity"]["checks"]
    assert [c["status"] for c in checks if c["status"] == "error"] == [], [c["error"] for c in checks]
    found = findings(result)
    _, expected = DRIFTS[drift]
    # the planted cause is found, and no other check speaks (the same check may add detail,
    # e.g. traffic_shift also reports the length shift that comes with the new traffic)
    assert expected <= set(found), {k: v["summary"] for k, v in found.items()}
    assert {check for check, _ in found} == {check for check, _ in expected}, {k: v["summary"] for k, v in found.items()}
    assert result["exit"] == (1 if expected else 0)
    assert result["junit"].count("<testcase") == len(CHECKS)
    if not expected:
        return
    ((check, cause),) = expected
    finding = found[(check, cause)]
    assert finding["affected"] > 0 and finding["total"] > 0
    ev = finding["evidence"]
    assert ev["request_ids"], "a finding names the requests it touches"
    if cause == "system_prompt":
        assert ev["production_system_prompt"] == SYSTEM
        assert ev["offline_system_prompt"] is None  # the template's default one applies offline
        assert "-You are a helpful AI assistant named SmolLM" in ev["diff"]
        assert "+" + SYSTEM + "<|im_end|>" in ev["diff"]
        assert finding["share"] == 1.0
    elif cause == "double_bos":
        bos = 1  # <|im_start|>, which SmolLM2's template already puts first
        assert ev["production_first_ids"][:2] == [bos, bos]
        assert ev["offline_first_ids"][0] == bos and ev["offline_first_ids"][1] != bos
        assert ev["first_divergence"] == 1
    elif cause == "sampling_params":
        assert "generation_config" in ev["parameters"]["temperature"]
        assert "0.7" in ev["parameters"]["temperature"] and "0.9" in ev["parameters"]["top_p"]
        effect = ev["effect"]
        assert effect["requests"] == 12 and effect["samples"] == 3
        assert effect["comparison"]["ci_low"] <= effect["comparison"]["diff"] <= effect["comparison"]["ci_high"]
    elif cause == "truncation":
        assert ev["production_keeps"] == 256 and ev["prompt_tokens"] > 256
        assert ev["lost_text"]
        metrics = next(c["metrics"] for c in checks if c["check"] == "preprocessing")
        assert metrics["prompt_tokens_max"] > 256
        assert finding["severity"] == "high"
    elif cause == "strict_parser":
        assert ev["examples"], "examples of rejected answers"
        for example in ev["examples"]:
            assert example["reference"].lower() in example["output"].lower()  # the lenient pass
            assert example["production_parse"] != "ok"
    elif cause == "traffic_shift":
        assert finding["severity"] == "high"
        assert finding["share"] >= 0.5


def test_truncation_counts_exactly_the_requests_over_the_limit(logs: Path, tmp_path: Path, harness_embedded_model_dir: Path) -> None:
    """Independently of the harness: render each logged request with SmolLM2's own template and
    count those longer than 256 tokens; the finding must touch exactly those."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(harness_embedded_model_dir))
    over = set()
    for n, line in enumerate((logs / "support.jsonl").read_text().splitlines(), start=1):
        messages = json.loads(line)["request"]["messages"]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        if len(ids) > 256:
            over.add(f"{logs / 'support.jsonl'}:{n}")
    result = run_parity(logs, tmp_path, "truncation")
    finding = findings(result)[("preprocessing", "truncation")]
    assert 0 < len(over) < 48
    assert set(finding["evidence"]["request_ids"]) == over
