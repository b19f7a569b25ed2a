"""The explorer page of two models: build time, peak memory and size, then first paint and
interactions in headless Chromium.

For each thread width (``--threads 1 2``), one run of ``experiments/explore.py`` (the command a user
runs, as a child process) builds the page; its wall time and the child's peak resident memory are
recorded, with the size line the build prints. Each page is then opened ``--loads`` times from
``file://`` in Debian's chromium (Playwright, every request that is not a file aborted and counted)
and timed with the Performance API inside the page:

- ``first-contentful-paint`` and the page's own ``decode`` and ``firstRender`` timings;
- each interaction from the call to the next frame painted (``requestAnimationFrame`` then a task):
  switching to each view, opening a tracked text, moving a step, sorting and filtering the corpus,
  a select and match over a 3-token span, and a unit search of every kind.

The targets (issue 27): a build of two Brown LMs over 1,000 test sentences in at most 10 minutes on
2 cores and at most 25 MB; first paint at most 2 s; each interaction at most 100 ms.

    python benchmarks/bench_explore.py --checkpoints runs/lm/brown_cpu/seed1/brown_lstm_s1/best.pt \\
        runs/lm/brown_cpu/seed1/brown_g2lstm_s1/best.pt --names lstm g2 --json benchmarks/results_explore_brown.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

# Each interaction runs in the page and resolves when the next frame after it has been painted.
INTERACTIONS = r"""
async (name) => {
  const g = window.g2lstm, ui = g.ui, n = g.tracked[0];
  const toks = g.tokens(0, g.header.models[0].layers[0].side, n);
  const outs = g.outputs(0, n) || toks;
  // [what the user has open before, the interaction]
  const inText = () => ui.openText(n), inCorpus = () => ui.show("corpus");
  const actions = {
    view_corpus: [inText, () => ui.show("corpus")],
    view_text: [inCorpus, () => ui.show("text")],
    view_gates: [inText, () => ui.show("gates")],
    view_match: [inText, () => ui.show("match")],
    view_units: [inText, () => ui.show("units")],
    view_clusters: [inText, () => ui.show("clusters")],
    open_text: [inCorpus, () => ui.openText(n)],
    next_step: [inText, () => ui.pickStep(1, false)],
    sort_corpus: [inCorpus, () => document.querySelector(".vrow.head span:nth-child(4)").click()],
    filter_corpus: [inCorpus, () => { const box = document.querySelector("#corpus-filter"); box.value = toks[0]; box.dispatchEvent(new Event("input")); }],
    select_and_match: [inText, () => ui.set({ view: "match", text: n, span: [0, Math.min(2, toks.length - 1)], t: 0 })],
    search_id: [inText, () => ui.search({ by: "id", field: "h", query: "3" })],
    search_word: [inText, () => ui.search({ by: "word", field: "h", query: toks[0] })],
    search_hellinger: [inText, () => ui.search({ by: "hellinger", field: "h", query: `${toks[0]}->${outs[0]}` })],
    search_saturation: [inText, () => ui.search({ by: "saturation", field: "f", query: "f" })],
    search_difference: [inText, () => ui.search({ by: "difference", field: "h", query: "" })],
  };
  if (!(name in actions)) throw new Error(`no interaction ${name}`);
  const [before, act] = actions[name];
  before();
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  const t0 = performance.now();
  act();
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return performance.now() - t0;
}
"""
NAMES = ["view_corpus", "view_text", "view_gates", "view_match", "view_units", "view_clusters", "open_text",
         "next_step", "sort_corpus", "filter_corpus", "select_and_match", "search_id", "search_word",
         "search_hellinger", "search_saturation", "search_difference"]


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def build(args, threads: int, out: Path) -> dict:
    """One run of the explore command at ``threads``: wall time, the child's peak memory, its size line."""
    command = [sys.executable, str(ROOT / "experiments" / "explore.py"),
               f"checkpoints=[{','.join(args.checkpoints)}]", f"names=[{','.join(args.names)}]",
               f"max_texts={args.max_texts}", f"budget_mb={args.budget_mb}", f"threads={threads}", f"out={out}",
               f"split={args.split}", *args.set]
    start, load_start = time.perf_counter(), load_average()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"the build at {threads} thread(s) failed:\n{output[-3000:]}")
    wrote = [line for line in output.splitlines() if line.startswith("wrote ")]
    return {"threads": threads, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "bytes": out.stat().st_size, "printed": wrote[-1] if wrote else None, "command": " ".join(command[1:]),
            "load_average_start": load_start, "load_average_end": load_average()}


def browse(page_path: Path, loads: int) -> dict:
    """Open the page ``loads`` times; per load the paint and decode timings and every interaction."""
    from playwright import sync_api

    runs = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(loads):
            outside, errors = [], []
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else (outside.append(route.request.url), route.abort()))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("body[data-ready]", timeout=120_000)
            paint = dict(page.evaluate("performance.getEntriesByType('paint').map(e => [e.name, e.startTime])"))
            timings = page.evaluate("g2lstm.ui.timings()")
            interactions = {name: round(page.evaluate(INTERACTIONS, name), 1) for name in NAMES}
            runs.append({"first_contentful_paint_ms": round(paint.get("first-contentful-paint", float("nan")), 1),
                         "decode_ms": round(timings["decode"], 1), "first_render_ms": round(timings["firstRender"], 1),
                         "interactions_ms": interactions, "requests_outside": len(outside), "console_errors": errors})
            page.close()
        browser.close()
    return {"loads": runs,
            "median": {"first_contentful_paint_ms": statistics.median(r["first_contentful_paint_ms"] for r in runs),
                       "first_render_ms": statistics.median(r["first_render_ms"] for r in runs),
                       "interactions_ms": {n: statistics.median(r["interactions_ms"][n] for r in runs) for n in NAMES}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--names", nargs="+", required=True)
    parser.add_argument("--max-texts", type=int, default=1000)
    parser.add_argument("--budget-mb", type=float, default=25.0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--loads", type=int, default=3, help="page loads per built page")
    parser.add_argument("--set", nargs="*", default=[], help="more key=value overrides of the explore config")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "explore" / "bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if len(args.names) != len(args.checkpoints):
        parser.error(f"--names needs one name per checkpoint: {len(args.checkpoints)} checkpoints, {len(args.names)} names")
    if not Path(CHROMIUM).exists():
        parser.error(f"the browser timings need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit, "cpu": cpu,
              "cores": os.cpu_count(), "load_average_start": load_average(), "builds": []}
    for threads in args.threads:
        page_path = args.out_dir / f"page_{threads}thread.html"
        built = build(args, threads, page_path)
        built["browser"] = browse(page_path, args.loads)
        result["builds"].append(built)
        median = built["browser"]["median"]
        slowest = max(median["interactions_ms"].items(), key=lambda kv: kv[1])
        print(f"{threads} thread(s): built in {built['wall_s']:.0f} s, peak {built['peak_rss_mb']:.0f} MB, "
              f"{built['bytes'] / 1e6:.2f} MB; first paint {median['first_contentful_paint_ms']:.0f} ms, "
              f"first render {median['first_render_ms']:.0f} ms; slowest interaction {slowest[0]} {slowest[1]:.0f} ms")
        print(f"  {built['printed']}")
    result["load_average_end"] = load_average()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
