"""The capacity-planning table (Markdown) from ``reports/bench.json`` and the shipped price table.

    python -m stampede.surfaces.bench.capacity [--bench reports/bench.json] [--region us-east-1]

Users per vCPU come from the measured CPU per 1,000 users (each Locust worker
process is single-threaded and held under the bench's 70 % limit), never more
than one local worker held; memory per user from the measured MiB per 1,000
users. A cloud worker runs one Locust process (the agent), so a size holds what
one process and its memory hold, however many vCPUs it has. Cost per 10,000
user-hours = the size's hourly price / the users it holds x 10,000.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from stampede.core.paths import data_dir
from stampede.workers.sizing import EC2_SIZES as SIZES, HELD_CPU_LIMIT_PCT

PRICES = data_dir("infra") / "aws" / "prices.yaml"
CPU_LIMIT_PCT = HELD_CPU_LIMIT_PCT
PROCESS_BASE_MIB = 60.0  # a Locust worker's memory before its first user (measured base is in bench.json)
EC2_SIZES = {name: SIZES[name] for name in ("c6i.large", "c6i.xlarge", "c7i.large", "c7i.xlarge")}  # (vCPU, GiB)
FARGATE_TASKS = {"fargate 1 vCPU / 2 GB": (1, 2), "fargate 2 vCPU / 4 GB": (2, 4)}
# measured on this 2-core machine when quiet (issue #7; the first design measured the same kind of machine), for the side-by-side column
TOOLS = [
    ("wrk", "~133,000", "n/a (no think time)", "-"),
    ("k6", "~26,600", "-", "~185"),
    ("Locust FastHttpUser (bare)", "~13,200", "10,000 at ~0.5 core", "~21"),
    ("Locust HttpUser", "~3,200", "-", "~39"),
]


def capacity_markdown(bench: dict, prices: dict, region: str = "us-east-1") -> str:
    figures = bench["figures"]
    cpu_per_1000 = figures["cpu_pct_per_1000_users"]["value"]
    mib_per_1000 = figures["mib_per_1000_users"]["value"]
    held = figures["users_held"]["value"]
    workers = figures["users_held"]["details"].get("workers") or 1
    by_cpu = math.floor(CPU_LIMIT_PCT / cpu_per_1000 * 1000) if cpu_per_1000 else 0
    # the slope alone overstates a vCPU when the fit ran into starved levels: never more than a worker held
    users_per_vcpu = min(by_cpu, held // workers) if held else by_cpu
    table = prices["regions"][region]
    lines = [
        f"Measured by `make bench` ({bench.get('finished_at', '?')}, {bench['environment']['cpu_count']} cores, "
        f"load average {bench['environment']['load_average_before'][0]:.1f} at the start):",
        "",
        "| figure | Stampede (stock journeys) |",
        "|---|---|",
        f"| users held on this machine ({workers} local workers) | {held:,} |",
        f"| users per worker process at the limit | {held // workers:,} |",
        f"| users per vCPU (worker under {CPU_LIMIT_PCT:.0f} % of a core) | {users_per_vcpu:,} |",
        f"| memory per 1,000 users | {mib_per_1000:.1f} MiB |",
        f"| CPU per 1,000 users | {cpu_per_1000:.1f} % of a core |",
        "",
        f"Cost per 10,000 user-hours, {region}, prices of {prices.get('as_of')} (`infra/aws/prices.yaml`; spot is a typical price, not a quote):",
        "",
        "| worker size | vCPU / GiB | users each (one Locust process) | on-demand USD/h | spot USD/h | on-demand per 10k user-h | spot per 10k user-h |",
        "|---|---|---|---|---|---|---|",
    ]
    sizes = [(name, v, g, table["ec2"]["on_demand"].get(name), table["ec2"]["spot"].get(name)) for name, (v, g) in EC2_SIZES.items()]
    for name, (vcpu, gb) in FARGATE_TASKS.items():
        on = vcpu * table["fargate"]["on_demand"]["vcpu_hour"] + gb * table["fargate"]["on_demand"]["gb_hour"]
        spot = vcpu * table["fargate"]["spot"]["vcpu_hour"] + gb * table["fargate"]["spot"]["gb_hour"]
        sizes.append((name, vcpu, gb, on, spot))
    for name, vcpu, gb, on, spot in sizes:
        by_memory = (gb * 1024 - PROCESS_BASE_MIB) / mib_per_1000 * 1000 if mib_per_1000 else float("inf")
        users = int(min(users_per_vcpu, by_memory) // 100 * 100)  # one Locust process per worker
        per = (lambda price: f"{price / users * 10_000:.3f}" if price and users else "-")  # noqa: E731
        lines.append(f"| {name} | {vcpu} / {gb} | {users:,} | {on:.4f} | {spot:.4f} | {per(on)} | {per(spot)} |")
    lines += [
        "",
        "Beside the tools measured on the same machine (loopback, one generator core):",
        "",
        "| tool | req/s per core, no think time | users at 3–8 s think time | MiB per 1,000 users |",
        "|---|---|---|---|",
    ]
    lines += peers_markdown(bench)
    ratio = figures.get("journey_rps_ratio", {})
    bare = (ratio.get("details") or {}).get("bare_rps_per_core")
    journeys = (ratio.get("details") or {}).get("journeys_rps_per_core")
    lines += [f"| {name} | {rps} | {users} | {mib} |" for name, rps, users, mib in TOOLS]
    if bare and journeys:
        lines.append(f"| Stampede stock journeys (this run) | {journeys:,.0f} (bare Locust in the same run: {bare:,.0f}; "
                     f"ratio {ratio['value']:.2f}) | {held:,} on {workers} workers | {mib_per_1000:.1f} |")
    return "\n".join(lines)


def peers_markdown(bench: dict) -> list[str]:
    """The seed's agent workflow under k6 and bare Locust beside Stampede's agent journey, from the bench's peers part."""
    peers_figure = bench["figures"].get("peer_rps_per_cpu_vs_k6") or {}
    details = peers_figure.get("details") or {}
    peers = details.get("peers")
    if not peers:
        return []
    memory = (bench["figures"].get("peer_memory_vs_k6") or {}).get("value")
    lines = [
        "",
        f"Peers side by side (`make bench`, peers part, {peers_figure.get('measured_at', '?')}): the seed's agent "
        f"workflow at {details.get('users', '?'):,} users against one target with a {details.get('delay_ms', '?'):.0f} ms "
        f"service time, {details.get('rounds', '?')} interleaved rounds:",
        "",
        "| peer | requests per CPU-second | peak RSS | MiB per 1,000 users (above one user) | p95 minus the target's own |",
        "|---|---|---|---|---|",
    ]
    names = {"k6": f"k6 {details.get('k6', '')} (the seed's script)", "bare Locust": "bare Locust (the seed's workflow)",
             "Stampede": "Stampede (agent journey)"}
    for peer, figures in peers.items():
        error = figures.get("p95_minus_target_ms")
        lines.append(f"| {names.get(peer, peer)} | {figures['requests_per_cpu_s']:,.0f} | {figures.get('peak_rss_mib', 0):.0f} MiB "
                     f"| {figures['mib_per_1000_users']:.1f} | {'-' if error is None else f'{error:+.1f} ms'} |")
    lines += ["", f"Stampede / k6: {peers_figure.get('value')}x the requests per CPU-second (goal >= 1.5), "
                  f"{memory}x the memory per user (goal <= 0.1)."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stampede-capacity")
    parser.add_argument("--bench", default="reports/bench.json")
    parser.add_argument("--prices", default=str(PRICES))
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    bench = json.loads(Path(args.bench).read_text())
    prices = yaml.safe_load(Path(args.prices).read_text())
    print(capacity_markdown(bench, prices, args.region))
    return 0


if __name__ == "__main__":
    sys.exit(main())
