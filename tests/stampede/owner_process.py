"""An owner of a run's load in a process of its own, for tests that SIGKILL it.

    python owner_process.py PLAN.json [--handover]

Plays the plan's stages (``stampede.steps.run_stages``) with the kill switch as its
stop probe, as the Airflow task does; a second process given the same plan takes a
still-running master over. Prints ``LOADRAN {json}`` when the load step returns.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from stampede.plan.run_plan import RunPlan
from stampede.safety import killswitch
from stampede.steps.run_stages import run_stages

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    plan = RunPlan.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    ran = run_stages(plan, stop_probe=killswitch.as_probe(), handover="--handover" in sys.argv)
    print("LOADRAN " + json.dumps(asdict(ran)), flush=True)
