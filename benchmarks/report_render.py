"""How fast the HTML report renders and opens, by number of items, against a plain table.

For synthetic runs of 100, 1,000 and 10,000 items (``harness.testing.synthetic_run``, 50 gates
for the largest), it prints side by side:

* ``render``: the Python side, result document -> report.html (``render_html``);
* ``ready``: headless Chromium (network off) from navigation to the page's ready mark: charts drawn
  and the item explorer filled (``harness.lib.browser.open_report``); the explorer puts only the
  rows in view in the page;
* ``plain table``: the reference, in the same page: the time to build every item as a table row
  (same six cells) and lay it out, i.e. what an explorer without virtual rows would add.

Sizes are measured in turn (round-robin) ``--repeat`` times, so a busy machine slows all alike;
each figure is printed as min-max over the repeats.

    python benchmarks/report_render.py [--repeat 3] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

PLAIN_TABLE_JS = """() => {
  const data = JSON.parse(document.getElementById("items-data").textContent);
  const t0 = performance.now();
  const table = document.createElement("table");
  for (const r of data.rows) {
    const tr = table.insertRow();
    for (const v of [data.benchmarks[r[0]], r[1], data.outcomes[r[2]], r[4], r[5], r[8]]) tr.insertCell().textContent = v;
  }
  document.body.appendChild(table);
  table.getBoundingClientRect();
  document.body.offsetHeight;
  return performance.now() - t0;
}"""


def _span(values: list[float]) -> str:
    return f"{min(values):8.0f}-{max(values):<8.0f}" if values else "-"


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()

    from harness_plugins.reporters.html import render_html

    from harness.lib.browser import open_report
    from harness.lib.resultdoc import result_document
    from harness.testing import synthetic_run

    sizes = [int(s) for s in args.sizes.split(",")]
    figures: dict[int, dict[str, list[float]]] = {n: {"render": [], "ready": [], "table": []} for n in sizes}
    render_html(result_document(synthetic_run(items=10, gates=1)))  # warm: imports, the Vega bundle
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for n in sizes:
                doc = result_document(synthetic_run(items=n, gates=50 if n >= 10_000 else 5))
                started = time.perf_counter()
                page = render_html(doc)
                figures[n]["render"].append((time.perf_counter() - started) * 1000)
                path = Path(tmp) / f"report-{n}.html"
                path.write_text(page, encoding="utf-8")
                report = open_report(path, lambda p: {"table_ms": p.evaluate(PLAIN_TABLE_JS)})
                if report.console_errors or report.failed_requests or report.outside_requests:
                    raise SystemExit(f"{n} items: {report.console_errors} {report.failed_requests} {report.outside_requests}")
                figures[n]["ready"].append(report.ready_ms)
                figures[n]["table"].append(report.values["table_ms"])
                size_mb = len(page.encode()) / 1e6
    load = os.getloadavg()[0]
    print(f"machine: {_cpu()}, {os.cpu_count()} CPUs, load {load:.1f}; {args.repeat} repeats, ms min-max")
    print(f"{'items':>7} {'render (Python)':>17} {'ready (Chromium)':>17} {'plain table (ref.)':>19}")
    for n in sizes:
        f = figures[n]
        print(f"{n:>7} {_span(f['render']):>17} {_span(f['ready']):>17} {_span(f['table']):>19}")
    print(f"page size at {sizes[-1]} items: {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
