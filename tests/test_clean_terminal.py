"""A clean terminal: during a run, what the libraries print goes to the run's log file, and the
screen holds only the harness's own lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from tqdm import tqdm

from harness.lib.console import (
    RunConsole,
    library_output_to,
    make_console,
    screen_stderr,
)

ROOT = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p)

_STAGE = re.compile(r"^( *)([a-z_]+) \S")
_TITLES = ("Curation ledger", "Benchmarks:", "Gates", "Production parity:", "Forgetting")
_BOX = "┏┃┡│└╇━"
_NOISY = (
    "import logging, warnings; warnings.warn('old api', FutureWarning); print('library says hi'); "
    "logging.getLogger('lib').warning('lib-logger line')"
)


def is_ours(line: str) -> bool:
    """Whether a screen line has one of the harness's own shapes: a stage line (the stage name
    right-aligned in 9 columns), a note or progress line (indented 10), a table, a table title,
    the training and exit summaries, or a ``harness:`` warning or error."""
    stage = _STAGE.match(line)
    return (
        not line.strip()
        or (stage is not None and len(stage.group(1) + stage.group(2)) == 9)
        or re.match(r"^ {10}\S", line) is not None
        or line[:1] in _BOX
        or line.strip().startswith(_TITLES)
        or line.startswith(("Training: ", "Training (from cache): ", "exit ", "harness: warning: ", "harness: error: "))
    )


@pytest.mark.parametrize(
    "line",
    [
        "/venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3312: FutureWarning: deprecated",
        "  warnings.warn(",
        "Writing model shards: 100%|██████████| 1/1 [00:00<00:00, 189.38it/s]",
        " 50%|█████     | 1/2 [00:01<00:01,  1.00it/s]",
        "[2026-01-01 00:00:00,000] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
        "loading weights file model.safetensors",
        "library says hi",
    ],
)
def test_library_lines_are_not_taken_for_ours(line: str) -> None:
    assert not is_ours(line)


def test_our_lines_are_recognised() -> None:
    for line in ("      run demo (20260101-000000-demo-abc123)", " evaluate mmlu / baseline: accuracy 0.298",
                 "          training: 1/2 loss 10.783 (0s)", "│ ppl  │ no_regression │", "exit 0: all blocking gates pass"):
        assert is_ours(line), line


def test_library_output_goes_to_the_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    console = make_console()
    log = tmp_path / "run" / "run.log"
    with library_output_to(log, console) as path:
        assert path == log
        for _ in tqdm(range(3), desc="lib-bar", disable=False):
            pass
        print("lib-print")
        os.write(2, b"lib-fd2\n")
        subprocess.run([sys.executable, "-c", _NOISY], check=True, env={**os.environ, "PYTHONWARNINGS": "always"})
        console.print("our-line")
        make_console().print("reporter-line")
        print("harness: warning: our-warning", file=screen_stderr())
    screen = capfd.readouterr()
    text = log.read_text()
    for noise in ("lib-bar", "lib-logger line", "lib-print", "lib-fd2", "FutureWarning: old api", "library says hi"):
        assert noise in text and noise not in screen.out + screen.err, noise
    assert "our-line" in screen.out and "reporter-line" in screen.out and "our-warning" in screen.err
    assert "our-line" not in text
    print("after")  # the streams are back
    assert capfd.readouterr().out == "after\n"


def test_an_empty_log_leaves_no_folder(tmp_path: Path) -> None:
    with library_output_to(tmp_path / "run" / "run.log", make_console()):
        pass
    assert not (tmp_path / "run").exists() and tmp_path.exists()


def test_no_color_and_pipes_give_plain_progress_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        console = RunConsole(Console(file=handle, force_terminal=True, highlight=False, width=100))
        with console.progress("scoring") as progress:
            for done in range(1, 5):
                progress(done, 4, "items")
    lines = out.read_text().splitlines()
    assert lines[-1].startswith("          scoring: 4/4 items (") and all(is_ours(x) for x in lines)
    assert "\x1b" not in out.read_text()


def test_quiet_drops_notes_and_progress(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        console = RunConsole(Console(file=handle, width=100), quiet=True)
        console.stage("train", "lora on 4 records")
        console.note("a note")
        with console.progress("scoring") as progress:
            progress(1, 1, "items")
    assert out.read_text() == "    train lora on 4 records\n"


@pytest.fixture
def noisy_suite(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> Path:
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ppl = {"name": "perplexity", "windows": 4, "span_chars": 200, "context_chars": 100, "window": 64, "stride": 32}
    return harness_write_suite({
        "name": "quiet", "seed": 3, "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "data": [{"path": str(data), "format": "alpaca"}],
        "train": {"name": "lora", "r": 4, "max_steps": 2, "batch_size": 4, "max_length": 64},
        "evaluate": {"ppl": ppl, "mmlu": {"name": "mmlu", "per_subject": 1, "subjects": ["anatomy"]}},
        "gates": {"ppl": "no_regression()"},
        "report": ["terminal", "json"],
    })


def _run(suite: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``harness run`` in a fresh process, with the libraries as loud as they get."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(PYTHONPATH=ROOT, PYTHONWARNINGS="always", TRANSFORMERS_VERBOSITY="info", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "harness.cli", *flags, "run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_a_run_prints_only_our_lines(noisy_suite: Path, tmp_path: Path) -> None:
    done = _run(noisy_suite, tmp_path)
    assert done.returncode == 0, done.stderr
    foreign = [line for line in (done.stdout + done.stderr).splitlines() if not is_ours(line)]
    assert foreign == []
    (log,) = (tmp_path / "reports").glob("*/run.log")
    assert "FutureWarning" in log.read_text() or "it/s]" in log.read_text()  # the libraries did speak
    assert f"library output: {log}" in done.stdout
    quiet = _run(noisy_suite, tmp_path, "--quiet")
    assert quiet.returncode == 0 and not re.search(r"^ {10}\S", quiet.stdout, re.MULTILINE)
    assert "library output" not in quiet.stdout and "Gates" in quiet.stdout


def test_a_long_stage_line_stays_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        console = RunConsole(Console(file=handle, width=40))
        console.stage("curate", "x" * 100)
        console.note("y" * 100)
    assert out.read_text().splitlines() == ["   curate " + "x" * 100, " " * 10 + "y" * 100]
