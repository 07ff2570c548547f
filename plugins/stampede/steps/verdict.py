"""Step 11, verdict: the run's outcome, as the DAG run's state and the command line's exit code.

A run passes only when its verdict is a pass, its test data is proved gone
(``cleanup.left`` is 0, counted after the deletes) and no worker survived the
teardown. Anything left behind outranks the verdict: it is the more urgent news.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stampede.core.paths import Artifact
from stampede.core.verdict import VERDICT_EXITS, Exit
from stampede.plan.run_plan import RunPlan
from stampede.steps.folder import folder_of
from stampede.steps.teardown import teardown_problem


class RunFailed(RuntimeError):
    """The run finished and did not pass (raised by :func:`final_verdict`)."""


@dataclass
class Outcome:
    exit: Exit
    verdict: str | None
    problems: list[str] = field(default_factory=list)
    results: str | None = None


def outcome_of(plan: RunPlan) -> Outcome:
    folder = folder_of(plan)
    left_behind = teardown_problem(plan)
    if not folder.exists(Artifact.RESULTS):
        problems = [left_behind] if left_behind else ["no results: the load step did not finish"]
        return Outcome(exit=Exit.LEFT_BEHIND if left_behind else Exit.ERROR, verdict=None, problems=problems)
    result = folder.results()
    problems = []
    if result.verdict != "pass":
        why = result.stopped.reason if result.stopped else ", ".join(
            f"{s.name}: {c.metric} {c.value} !{c.op} {c.threshold}" for s, c in result.failed_checks())
        problems.append(f"verdict {result.verdict}" + (f" ({why})" if why else ""))
    cleanup = result.cleanup
    if not cleanup.clean:
        left = "an unknown number of" if cleanup.left is None else str(cleanup.left)
        problems.append(f"test data left on the target: {left} entities ({cleanup.error or 'see results'})")
    if left_behind:
        problems.append(left_behind)
    exit_code = Exit.LEFT_BEHIND if (left_behind or not cleanup.clean) else VERDICT_EXITS[result.verdict]
    return Outcome(exit=exit_code, verdict=result.verdict, problems=problems,
                   results=folder.uri(Artifact.RESULTS))


def final_verdict(plan: RunPlan) -> dict:
    """Fail loudly when the run did not pass, left test data behind or left workers running."""
    outcome = outcome_of(plan)
    if outcome.exit != Exit.PASS:
        raise RunFailed("; ".join(outcome.problems))
    return {"verdict": outcome.verdict, "cleanup_left": 0, "results": outcome.results}
