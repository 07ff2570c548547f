"""An owner of a run's load in a process of its own, for tests that SIGKILL it.

    python owner_process.py PLAN.json [--handover]

Plays the plan's stages (``stampede.steps.run_stages``) with the kill switch as its
stop probe, as the Airflow task does; a second process given the same plan takes a
still-running master over, beating first, before it imports the load step, as the task
does too. Prints ``LOADRAN {json}`` when the load step returns.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from stampede.plan.run_plan import RunPlan
from stampede.steps.takeover import beat_first

if __name__ == "__main__":
    plan = RunPlan.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    heartbeat = beat_first(plan)
    from stampede.safety import killswitch
    from stampede.steps.run_stages import run_stages

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    ran = run_stages(plan, stop_probe=killswitch.as_probe(), handover="--handover" in sys.argv, heartbeat=heartbeat)
    print("LOADRAN " + json.dumps(asdict(ran)), flush=True)
