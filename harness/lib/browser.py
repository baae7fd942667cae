"""Open an HTML report in headless Chromium with the network off, and say what a person would see.

Used by the report tests, ``benchmarks/report_render.py`` and to take the README's screenshot.  It
drives the system's Chromium (Debian's ``chromium`` package; ``make setup`` installs it) through
Playwright's Python package, and never downloads a browser.  The page gets a fresh profile, an
offline context, and a route that refuses every request that is not the report file itself, so a
report that tried to reach the network shows it as a failed request.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, require

CHROMIUM_ENV = "HARNESS_CHROMIUM"
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--proxy-server=127.0.0.1:9",  # anything that slipped past the route would go nowhere
)
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> Path:
    """The Chromium binary: ``$HARNESS_CHROMIUM``, else ``chromium`` on PATH."""
    found = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        raise HarnessError("Chromium is not installed: make setup (apt-get install chromium), or set HARNESS_CHROMIUM")
    return Path(found)


@dataclass
class PageReport:
    """What happened when the page was opened."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    """Requests for anything but the report file (each was refused)."""
    ready_ms: float = float("nan")
    """From navigation start to the page's ready mark (charts drawn, explorer filled)."""
    ready_state: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    """What ``inspect`` returned."""


def open_report(
    path: Path,
    inspect: Callable[[Any], dict[str, Any]] | None = None,
    screenshot: Path | None = None,
    timeout_s: float = 60.0,
) -> PageReport:
    """Load ``path`` and wait for its ready mark; ``inspect(page)`` may then read or drive the
    page (a Playwright ``Page``); ``screenshot`` saves the first screen as PNG."""
    sync_api = require("playwright.sync_api", extra="dev")
    target = path.resolve().as_uri()
    report = PageReport()

    def route(r: Any) -> None:
        if r.request.url.split("#")[0] == target:
            r.continue_()
        else:
            report.outside_requests.append(r.request.url)
            r.abort()

    with tempfile.TemporaryDirectory(prefix="report-browser-") as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(chromium_path()), headless=True, args=list(FLAGS),
            offline=True, viewport=VIEWPORT, service_workers="block",
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: report.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: report.console_errors.append(f"uncaught: {e}"))
            page.on("requestfailed", lambda r: report.failed_requests.append(f"{r.url}: {r.failure}"))
            page.route("**/*", route)
            started = time.perf_counter()
            page.goto(target, wait_until="load", timeout=timeout_s * 1000)
            remaining = max(1.0, timeout_s - (time.perf_counter() - started))
            page.wait_for_function("document.documentElement.dataset.ready", timeout=remaining * 1000)
            report.ready_state = page.evaluate("document.documentElement.dataset.ready")
            report.ready_ms = float(page.evaluate("window.reportReadyMs || NaN"))
            if inspect is not None:
                report.values = inspect(page)
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
        finally:
            context.close()
    # an aborted outside request also fires requestfailed: count it once, as outside
    report.failed_requests = [f for f in report.failed_requests if not any(f.startswith(u) for u in report.outside_requests)]
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.lib.browser REPORT.html [--screenshot OUT.png]``: open a report as the
    tests do and print what happened; exit 1 on a console error or a request."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.lib.browser", description=main.__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, help="save the first screen (1280x900) as PNG")
    args = parser.parse_args(argv)
    report = open_report(args.report, lambda page: {"gates": page.locator("#gates tbody tr").count()}, args.screenshot)
    print(f"{args.report}: {report.ready_state} after {report.ready_ms:.0f} ms; {report.values['gates']} gate rows")
    problems = [f"console error: {e}" for e in report.console_errors]
    problems += [f"failed request: {r}" for r in report.failed_requests]
    problems += [f"refused request: {r}" for r in report.outside_requests]
    print("\n".join(problems) or "no console error, no request")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
