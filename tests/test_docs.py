"""The docs cannot drift: generated pages are current, examples validate, links resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.suite.config import Suite
from harness import docgen

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def _examples(page: Path) -> list[dict[str, Any]]:
    """The YAML blocks of a page that are suites or parts of one (their keys are suite keys)."""
    blocks = [yaml.safe_load(b) for b in YAML_BLOCK.findall(page.read_text())]
    return [b for b in blocks if isinstance(b, dict) and set(b) <= set(Suite.model_fields)]


def test_generated_pages_are_current() -> None:
    assert docgen.stale_pages() == [], "run: python -m harness.docgen"


def test_a_changed_page_is_stale(tmp_path: Path) -> None:
    for name, make in docgen.PAGES.items():
        (tmp_path / name).write_text(make())
    assert docgen.stale_pages(tmp_path) == []
    (tmp_path / "suite.md").write_text(docgen.suite_page().replace("| `seed` |", "| `sead` |", 1))
    assert docgen.stale_pages(tmp_path) == ["suite.md"]


def test_every_suite_key_is_described_in_the_reference() -> None:
    assert docgen.undocumented_fields(Suite) == []
    page = (ROOT / "docs" / "suite.md").read_text()
    for key in ("max_quarantined_fraction", "default_bound", "fail_on", "api_key_env", "holdout_fraction"):
        assert f"| `{key}` |" in page


def test_every_command_and_option_is_in_the_reference() -> None:
    page = (ROOT / "docs" / "commands.md").read_text()
    for heading in ("## `harness run`", "## `harness validate`", "## `harness compare`"):
        assert heading in page
    assert "`--strict-plugins`" in page and "`--reports`" in page


def test_readme_is_a_front_page() -> None:
    assert README.stat().st_size < 12_000
    text = README.read_text()
    assert "make demo" in text and "make test" in text and "docs/report.png" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == [], f"{page.name}: broken links {broken}"


def test_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Title\n[a](missing.md) [b](#title) [c](https://example.org)\n")
    assert _relative_links(page) == ["missing.md", "#title"]
    assert "title" in _anchors(page) and _slug("The demo's report.md") == "the-demos-reportmd"


def _validate(suite: dict[str, Any], tmp_path: Path) -> int:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return main(["validate", str(path), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "r")])


def _readme_suite() -> dict[str, Any]:
    """The README's stage examples, one after the other, make one suite (all but the arms
    example, whose folders, adapter and endpoint are the reader's own)."""
    suite: dict[str, Any] = {"name": "readme", "model": "smollm2-135m-instruct"}
    for block in _examples(README):
        if "models" not in block:
            suite.update(block)
    return suite


def test_readme_arms_example_shows_every_kind_and_is_a_valid_part() -> None:
    (block,) = [b for b in _examples(README) if "models" in b]
    Suite.model_validate({"name": "part", "model": "smollm2-135m-instruct", "train": {"name": "lora"}, **block})
    specs = list(block["models"].values())
    assert any(isinstance(s, str) for s in specs)  # a model folder
    assert any(isinstance(s, dict) and "adapter" in s for s in specs)
    assert any(isinstance(s, dict) and s.get("backend") == "openai" for s in specs)  # an endpoint
    assert any(isinstance(s, dict) and "of" in s and "prompt" in s for s in specs)  # a prompt variant
    text = README.read_text()
    assert "`base`" in text and "`trained`" in text


def test_readme_examples_validate_as_one_suite(tmp_path: Path) -> None:
    suite = _readme_suite()
    assert {"data", "curate", "train", "forgetting", "evaluate", "parity", "gates"} <= set(suite)
    assert _validate(suite, tmp_path) == 0


def test_a_broken_readme_example_fails_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _readme_suite()
    suite["evaluate"]["mmlu"]["per_subjetc"] = 1
    assert _validate(suite, tmp_path) == 2
    assert "per_subjetc" in capsys.readouterr().err


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_docs_examples_validate(page: Path, tmp_path: Path) -> None:
    for block in _examples(page):
        if {"name", "model"} <= set(block):
            assert _validate(block, tmp_path) == 0, f"{page.name}: a full suite example does not validate"
        else:  # a part of a suite: its keys and types
            Suite.model_validate({"name": "part", "model": "smollm2-135m-instruct", **block})
