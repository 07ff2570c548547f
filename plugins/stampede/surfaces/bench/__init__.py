"""``make bench``: how far one machine goes, and where each cost lies.

A benchmark, separate from the tests: bounded in time, loopback only, starting
its own targets, driving the product's own pipeline functions. Each part
measures side by side in one run, so its figures are ratios that survive a
noisy machine:

- ``journey_rps``: the stock journeys' requests per generator CPU-second as a
  fraction of bare Locust ``FastHttpUser`` requesting one URL, same fast target, same
  users and think time (so about the same rate), metered alike (``bench.meter``);
- ``users``: a stepped run of the stock mix (3–8 s think time) through the
  pipeline → ``users_held``, ``mib_per_1000_users``, ``cpu_pct_per_1000_users``,
  ``p95_error_ms``;
- ``overhead``: a nightly DAG run (``airflow dags test``; the run's duration as Airflow
  records it, with the command's start-up and exit beside it) minus its load time;
- ``analysis``: validate, analyse and report a synthetic 24-hour history with a slow leak
  planted from hour 16, each step in a fresh process → ``analysis_s_24h`` (analyse + report),
  ``analysis_peak_mib_24h``,
  ``analysis_report_mib_24h``, ``drift_leak_start_hour`` (the hour the drift analysis names);
- ``cleanup``: entities cleaned per second against the demo target and against a
  target with a 20 ms service time, and the time to clean what ``normal`` creates.

Run ``python -m stampede.surfaces.bench [--quick] [--only PART ...]``; results go to
``reports/bench.json`` and a table on stdout.
"""

from stampede.surfaces.bench.figures import GOALS, Figure

__all__ = ["GOALS", "Figure"]
