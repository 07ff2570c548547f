"""``python -m stampede.surfaces.bench [--quick] [--only PART ...]``: run the benchmark, print the table, write bench.json.

Every part runs by default but those in :data:`OPT_IN` (``memory``: a 20-minute soak), which run with ``--only``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from stampede.surfaces.bench.figures import Figure, table

# part -> the figures it produces (``--only`` takes either)
PARTS: dict[str, tuple[str, ...]] = {
    "peers": ("peer_rps_per_cpu_vs_k6", "peer_memory_vs_k6", "peer_journey_vs_bare_locust"),
    "journey_rps": ("journey_rps_ratio",),
    "users": ("users_held", "mib_per_1000_users", "cpu_pct_per_1000_users", "p95_error_ms", "p95_error_ms_1000",
              "p95_error_ms_30000"),
    "overhead": ("pipeline_overhead_s", "pipeline_overhead_scheduler_s", "search_wall_per_step_s"),
    "analysis": ("analysis_s_24h", "analysis_peak_mib_24h", "analysis_report_mib_24h", "drift_leak_start_hour"),
    "cleanup": ("cleanup_per_s_demo", "cleanup_per_s_20ms", "cleanup_normal_s"),
    "memory": ("master_rss_mib_per_h", "worker_rss_mib_per_h"),
}
TIME_BUDGET_S = 15 * 60
OPT_IN = ("memory",)  # a 20-minute soak of its own: run with --only memory, never by default


def _runner(part: str) -> Callable[[Path, bool], list[Figure]]:
    if part == "peers":
        from stampede.surfaces.bench.peers import peer_figures

        return lambda workdir, quick: peer_figures(workdir, quick=quick)
    if part == "journey_rps":
        from stampede.surfaces.bench.generators import journey_rps_ratio

        return lambda workdir, quick: [journey_rps_ratio(workdir, quick=quick)]
    if part == "users":
        from stampede.surfaces.bench.generators import users_held

        return lambda workdir, quick: users_held(workdir, quick=quick)
    if part == "overhead":
        from stampede.surfaces.bench.overhead import pipeline_overhead

        from stampede.surfaces.bench.overhead import scheduler_overhead, search_overhead

        def both(workdir: Path, quick: bool) -> list[Figure]:
            for name in ("scheduler", "search"):
                (workdir / name).mkdir()
            return [pipeline_overhead(workdir, quick=quick), scheduler_overhead(workdir / "scheduler", quick=quick),
                    search_overhead(workdir / "search", quick=quick)]

        return both
    if part == "cleanup":
        from stampede.surfaces.bench.cleanup import cleanup_figures

        return lambda workdir, quick: cleanup_figures(workdir, quick=quick)
    if part == "memory":
        from stampede.surfaces.bench.memory import memory_figures

        return lambda workdir, quick: memory_figures(workdir, quick=quick)
    from stampede.surfaces.bench.analysis import analysis_24h

    return lambda workdir, quick: analysis_24h(workdir, quick=quick)


def _parts_for(only: list[str]) -> list[str]:
    if not only:
        return [p for p in PARTS if p not in OPT_IN]
    chosen = []
    for name in only:
        part = name if name in PARTS else next((p for p, figs in PARTS.items() if name in figs), None)
        if part is None:
            known = ", ".join(list(PARTS) + [f for figs in PARTS.values() for f in figs])
            raise SystemExit(f"bench: unknown part {name!r}; use one of {known}")
        if part not in chosen:
            chosen.append(part)
    return [p for p in PARTS if p in chosen]


def _environment() -> dict:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {n: version(n) for n in ("locust", "apache-airflow", "great-expectations", "gevent", "uvloop")},
        "nofile_limit": _nofile(),
    }


def _nofile() -> list[int]:
    import resource

    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stampede-bench", description=__doc__)
    parser.add_argument("--only", nargs="*", default=[], help=f"parts or figures: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="short runs for development (figures are rougher)")
    parser.add_argument("--out", default="", help="JSON file (default: $STAMPEDE_REPORTS_DIR/bench.json)")
    parser.add_argument("--keep", default="", metavar="DIR",
                        help="run in DIR and keep it (each part's run folders and logs); default: a temporary folder")
    args = parser.parse_args(argv)
    if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
        parser.error(f"--keep: {args.keep} is not empty; fix: name a new folder (an earlier run's would mix in)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("STAMPEDE_TARGET_PASSWORD", os.environ.get("STAMPEDE_DEMO_PASSWORD", "LoadTest123!"))
    os.environ.setdefault("STAMPEDE_DEMO_PASSWORD", os.environ["STAMPEDE_TARGET_PASSWORD"])
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from stampede.core.paths import reports_root

    out = Path(args.out) if args.out else reports_root() / "bench.json"
    parts = _parts_for(args.only)
    started = time.time()
    load_before = os.getloadavg()
    print(f"stampede bench: {', '.join(parts)}{' (quick)' if args.quick else ''}; "
          f"{os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    part_seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="stampede-bench-"))
        for part in parts:
            part_started = time.time()
            print(f"\n== {part}", flush=True)
            workdir = Path(tmp) / part
            workdir.mkdir(parents=True)
            try:
                figures += _runner(part)(workdir, args.quick)
            except Exception as exc:  # one broken part must not hide the others' figures; reported below
                logging.getLogger("stampede.surfaces.bench").exception("part %s failed", part)
                errors[part] = f"{type(exc).__name__}: {exc}"
                figures += [Figure(name, None, details={"error": errors[part]}) for name in PARTS[part]]
            part_seconds[part] = round(time.time() - part_started, 1)
            print(f"   ({part_seconds[part]:.0f} s)", flush=True)
    load_after = os.getloadavg()
    elapsed = time.time() - started
    print("\n" + table(figures))
    print(f"\nbench took {elapsed:.0f} s; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    document = _merge(out, figures, args.quick)
    document.update(
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        quick=args.quick, parts=parts, part_seconds=part_seconds, elapsed_s=round(elapsed, 1), errors=errors,
        environment={**_environment(), "load_average_before": list(load_before), "load_average_after": list(load_after)},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(document, indent=2))
    tmp_out.replace(out)
    print(f"written: {out}")
    if elapsed > TIME_BUDGET_S:
        print(f"bench: took {elapsed:.0f} s, over its budget of {TIME_BUDGET_S} s", file=sys.stderr)
    return 1 if errors else 0


def _merge(out: Path, figures: list[Figure], quick: bool) -> dict:
    """Figures of this run replace the same figures of an earlier run; the others stay, with their own dates."""
    document: dict = {"figures": {}}
    if out.exists():
        try:
            document = json.loads(out.read_text())
        except ValueError:
            document = {"figures": {}}
    for figure in figures:
        document.setdefault("figures", {})[figure.name] = {**figure.to_dict(), "quick": quick}
    return document


if __name__ == "__main__":
    sys.exit(main())
