"""Step 11, verdict: the run's outcome, as the DAG run's state and the command line's exit code.

A run passes only when its verdict is a pass, its test data is proved gone
(``cleanup.left`` is 0, counted after the deletes) and the teardown proved that
no worker survived (``teardown.json`` with ``left`` 0; a teardown that failed,
was skipped or died counts as workers left). Anything left behind outranks the
verdict: it is the more urgent news, and its own exit code
(:attr:`stampede.core.verdict.Exit.LEFT_BEHIND`).

The final verdict is the run's end: it ends the run's tag (``stampede.state.tags``),
so the reaper may clean up whatever the run could not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stampede.core.paths import Artifact
from stampede.core.verdict import VERDICT_EXITS, Exit
from stampede.plan.run_plan import RunPlan
from stampede.state import tags
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


def finish_run(plan: RunPlan) -> Outcome:
    """The run is over: end its tag (the reaper may now clean up after it) and say how it ended."""
    tags.end(plan.run_tag)
    return outcome_of(plan)


def final_verdict(plan: RunPlan, *, teardown_finished: bool = True) -> dict:
    """Fail loudly when the run did not pass, left test data behind or left workers running.

    :param teardown_finished: False when the teardown task did not succeed (Airflow
        passes its state): workers may be alive whatever ``teardown.json`` says.
    """
    outcome = finish_run(plan)
    if not teardown_finished and outcome.exit != Exit.LEFT_BEHIND:
        outcome = Outcome(exit=Exit.LEFT_BEHIND, verdict=outcome.verdict, results=outcome.results, problems=[
            *outcome.problems, "the teardown task did not succeed: workers of the run may still be running"])
    if outcome.exit != Exit.PASS:
        raise RunFailed(f"{outcome.exit.name.lower().replace('_', ' ')} (exit {int(outcome.exit)}): "
                        + "; ".join(outcome.problems))
    return {"verdict": outcome.verdict, "cleanup_left": 0, "results": outcome.results}
