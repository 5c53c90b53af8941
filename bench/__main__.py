"""One command for the whole benchmark: ``python -m bench --lines 1000000 --repeat 3``.

1. Generates the sample ledger at the given size (cached in ``bench/cache/``; deterministic).
2. Runs, on the same ADS CSV and in the same session, ``--repeat`` times each:
   the **floor** (Polars reads it once with types and writes Parquet), the **full nightly job**
   (``belegwacht run``, stage times from its manifest) and the **naive baseline**
   (pandas + IsolationForest + three pandas rules), each as its own process, measuring wall
   time and peak RSS of the whole process tree.
3. Scores detection quality on the ledger's labels: rules only, models only, combined, naive.
4. Optionally times the review queue's first render and the monthly report with 100,000 items.
5. Writes ``bench/results/<lines>.json`` and ``.md`` and prints the Markdown table.

Medians over the repeats are reported, and ratios to the floor measured in the same session.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from bench.measure import run_measured

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "cache"
RESULTS = ROOT / "bench" / "results"
STAGES = ["ingest", "validate", "history", "rules", "models", "scoring", "publish"]
JOURNAL = ["entity", "fiscal_year", "journal_id"]


def ledger(lines: int, seed: int) -> Path:
    """The cached generated ledger folder (``ads/``, ``labels.csv``)."""
    from sample_data.generate import generate

    folder = CACHE / f"ledger_{lines}_{seed}"
    if not (folder / "labels.csv").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {lines:,} lines into {folder} …", file=sys.stderr)
        generate(lines, seed, folder, ["ads"])
    return folder


def _ads_csv(folder: Path) -> Path:
    return next((folder / "ads").glob("GL_Detail_*.csv"))


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def _rankings(run_dir: Path, naive_path: Path | None) -> dict[str, pl.DataFrame]:
    """Journal rankings (JOURNAL + score) for each variant, from one published run."""
    from detect.config import Settings

    points = Settings().scoring.severity_points
    hits = pl.read_parquet(run_dir / "rule_hits.parquet")
    rules_only = (hits.with_columns(pl.col("severity").replace_strict(points, default=0.0)
                                    .alias("points"))
                  .unique(JOURNAL + ["rule_id"])
                  .group_by(JOURNAL).agg(pl.col("points").sum().alias("score")))
    models_only = (pl.scan_parquet(run_dir / "model_scores.parquet")
                   .group_by(JOURNAL).agg(pl.col("model_score").max().alias("score")).collect())
    combined = pl.read_parquet(run_dir / "findings.parquet").select(
        JOURNAL + [pl.col("risk_score").alias("score")])
    out = {"rules only": rules_only, "models only": models_only, "combined": combined}
    if naive_path is not None and naive_path.exists():
        naive = pl.read_parquet(naive_path).with_columns(
            pl.col("journal_id").cast(pl.String), pl.col("fiscal_year").cast(pl.Int32))
        entity = combined["entity"][0] if combined.height else ""
        out["naive baseline"] = naive.select(
            pl.lit(entity).alias("entity"), "fiscal_year", "journal_id",
            (-pl.col("rank").cast(pl.Float64)).alias("score"))
    return out


def detection(run_dir: Path, labels_path: Path, naive_path: Path | None) -> dict[str, Any]:
    from bench.detection import evaluate

    journals = pl.read_parquet(run_dir / "bookings.parquet", columns=JOURNAL).unique()
    labels = pl.read_csv(labels_path, schema_overrides={"journal_id": pl.String,
                                                       "fiscal_year": pl.Int32})
    result = {}
    for name, ranking in _rankings(run_dir, naive_path).items():
        table = evaluate(ranking.with_columns(pl.col("fiscal_year").cast(pl.Int32)),
                         labels, journals, score="score")
        result[name] = table.to_dicts()
    return result


def stage_cpu(log_path: Path) -> dict[str, float]:
    """CPU seconds per stage from the run's structured log (``step_done`` events)."""
    out: dict[str, float] = {}
    if not log_path.exists():
        return out
    for line in log_path.read_text("utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") == "step_done" and "cpu_seconds" in event:
            out[event["step"]] = out.get(event["step"], 0.0) + event["cpu_seconds"]
    return out


def run_once(csv: Path, folder: Path, work: Path, naive: bool,
             max_rss_mb: float | None = None) -> dict[str, Any]:
    py = sys.executable
    out: dict[str, Any] = {}
    m = run_measured([py, "-m", "bench.floor", str(csv), str(work / "floor.parquet")])
    if m.returncode:
        raise RuntimeError(f"floor failed: {m.stderr[-2000:]}")
    out["floor"] = {"seconds": m.seconds, "cpu_s": m.cpu_seconds, "peak_rss_mb": m.peak_rss_mb}

    data_dir = work / "var"
    shutil.rmtree(data_dir, ignore_errors=True)
    m = run_measured([py, "-m", "detect", "run", str(folder / "ads"), "--data-dir",
                      str(data_dir), "-q"], max_rss_mb=max_rss_mb)
    if m.killed_over_mb:
        logs = sorted((data_dir / "runs").glob("*/run.log.jsonl"))
        reached = stage_cpu(logs[-1]) if logs else {}
        raise RuntimeError(f"belegwacht run killed after {m.seconds:.0f} s: process tree above "
                           f"{max_rss_mb:.0f} MB (stages done: {reached})")
    if m.returncode:
        raise RuntimeError(f"belegwacht run failed: {m.stderr[-3000:]}")
    run_dir = data_dir / "runs" / (data_dir / "CURRENT").read_text().strip()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    out["job"] = {"seconds": m.seconds, "cpu_s": m.cpu_seconds, "peak_rss_mb": m.peak_rss_mb,
                  "stages": manifest.get("durations", {}),
                  "stages_cpu": stage_cpu(run_dir / "run.log.jsonl"),
                  "items": manifest.get("findings", {}).get("items"),
                  "run_dir": str(run_dir)}
    if naive:
        m = run_measured([py, "-m", "bench.naive", str(csv), str(work / "naive.parquet")])
        if m.returncode:
            raise RuntimeError(f"naive baseline failed: {m.stderr[-2000:]}")
        out["naive"] = {"seconds": m.seconds, "cpu_s": m.cpu_seconds, "peak_rss_mb": m.peak_rss_mb}
    return out


def timed_report(items: int) -> float | None:
    """Seconds to build the monthly report for a month with ``items`` review items."""
    try:
        from bench.app_render import build_data_dir  # 100k-item data dir, shared with the app bench
    except ImportError:
        return None
    from detect.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        data_dir, month = build_data_dir(Path(tmp), items)
        start = time.perf_counter()
        build_report(data_dir, month, output=Path(tmp) / "report.html")
        return time.perf_counter() - start


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    floor = s["floor_s"]
    lines = [
        f"### {result['lines']:,} lines · {result['date']} · {result['machine']}",
        "",
        "| step | median wall s | × floor | CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
        f"| floor: Polars CSV → Parquet | {floor} | 1.0 | {s.get('floor_cpu_s', '')} | "
        f"{s['floor_rss_mb']} |",
    ]
    for stage in STAGES:
        if stage in s["stages"]:
            cpu = s.get("stages_cpu", {}).get(stage, "")
            lines.append(f"| job: {stage} | {s['stages'][stage]} | "
                         f"{s['stages'][stage] / floor:.1f} | {cpu} | |")
    lines.append(f"| **whole nightly job** (process) | **{s['job_s']}** | "
                 f"**{s['job_s'] / floor:.1f}** | {s.get('job_cpu_s', '')} | {s['job_rss_mb']} |")
    if "naive_s" in s:
        lines.append(f"| naive baseline (pandas + IsolationForest) | {s['naive_s']} | "
                     f"{s['naive_s'] / floor:.1f} | {s.get('naive_cpu_s', '')} | "
                     f"{s['naive_rss_mb']} |")
    if s["stages"].get("validate") is not None:
        share = s["stages"]["validate"] / s["job_s"]
        lines.append(f"\nValidation share of the whole job: {share:.0%}.")
    if result.get("report_s") is not None:
        lines.append(f"Monthly report with 100,000 items: {result['report_s']:.2f} s.")
    lines += ["", "| variant | recall@0.5% | recall@1% | recall@2% | AP |", "|---|---:|---:|---:|---:|"]
    for name, rows in result.get("detection", {}).items():
        overall = next(r for r in rows if r["scenario"] == "overall")
        lines.append(f"| {name} | {overall['recall@0.5%']:.2f} | {overall['recall@1%']:.2f} | "
                     f"{overall['recall@2%']:.2f} | {overall['ap']:.2f} |")
    combined = result.get("detection", {}).get("combined")
    if combined:
        lines += ["", "Per scenario (combined): | scenario | n | recall@1% | AP |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['scenario']} | {r['n']} | {r['recall@1%']:.2f} | {r['ap']:.2f} |"
                  for r in combined if r["scenario"] != "overall"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument("--max-rss-mb", type=float, default=None,
                    help="kill the nightly job if its process tree exceeds this (shared machines)")
    ap.add_argument("--report-items", type=int, default=100_000,
                    help="time the monthly report with this many items (0 = skip)")
    args = ap.parse_args(argv)

    folder = ledger(args.lines, args.seed)
    csv = _ads_csv(folder)
    runs = []
    with tempfile.TemporaryDirectory(prefix="belegwacht-bench-") as tmp:
        work = Path(tmp)
        for i in range(args.repeat):
            print(f"repeat {i + 1}/{args.repeat} …", file=sys.stderr)
            runs.append(run_once(csv, folder, work, naive=not args.no_naive,
                                 max_rss_mb=args.max_rss_mb))
        last_run = Path(runs[-1]["job"]["run_dir"])
        quality = detection(last_run, folder / "labels.csv",
                            None if args.no_naive else work / "naive.parquet")
    summary: dict[str, Any] = {
        "floor_s": _median([r["floor"]["seconds"] for r in runs]),
        "floor_rss_mb": round(max(r["floor"]["peak_rss_mb"] for r in runs)),
        "floor_cpu_s": _median([r["floor"].get("cpu_s", 0.0) for r in runs]),
        "job_cpu_s": _median([r["job"].get("cpu_s", 0.0) for r in runs]),
        "stages_cpu": {st: _median([r["job"].get("stages_cpu", {}).get(st, 0.0) for r in runs])
                       for st in STAGES},
        "job_s": _median([r["job"]["seconds"] for r in runs]),
        "job_rss_mb": round(max(r["job"]["peak_rss_mb"] for r in runs)),
        "stages": {st: _median([r["job"]["stages"].get(st, 0.0) for r in runs])
                   for st in STAGES if st in runs[0]["job"]["stages"]},
    }
    if not args.no_naive:
        summary["naive_s"] = _median([r["naive"]["seconds"] for r in runs])
        summary["naive_rss_mb"] = round(max(r["naive"]["peak_rss_mb"] for r in runs))
        summary["naive_cpu_s"] = _median([r["naive"].get("cpu_s", 0.0) for r in runs])
    result = {
        "lines": args.lines, "seed": args.seed, "repeat": args.repeat,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
                   f"{platform.platform(terse=True)}",
        "summary": summary, "runs": runs, "detection": quality,
        "report_s": timed_report(args.report_items) if args.report_items else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"bench_{args.lines}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    md = markdown(result)
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
