"""Can Locust run this locustfile? Preflight asks in a process of its own, before any load.

``python -m stampede.load.locustfile_check FILE [UserClass ...]`` compiles the
file, imports it the way Locust does (with Stampede's plugin loaded first, as
in a run) and looks for the User classes the scenario names. It prints one
line, ``STAMPEDE-LOCUSTFILE-CHECK {"problem": …, "fix": …}`` (or ``{}`` when
the file can run), after whatever the file itself printed.

A separate process because importing Locust monkey-patches the whole process
with gevent (the pipeline's process is Airflow's), and because a team's file
runs its module-level code on import: here it runs with the load processes'
allow-listed environment, never the pipeline's secrets. Without this check a
file with a missing package (Locust's own ``examples/worker_index.py`` needs
``locust-plugins``) failed only after the workers had started, as "Locust wrote
no results; see master.log".
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

MARK = "STAMPEDE-LOCUSTFILE-CHECK "


def check(path: Path, user_classes: list[str]) -> dict[str, str]:
    """``{}`` when Locust can run ``path`` with ``user_classes``, else ``{"problem", "fix"}``."""
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return {"problem": f"cannot be read: {type(exc).__name__}: {exc}", "fix": "give a readable Python file"}
    try:
        compile(source, str(path), "exec")
    except SyntaxError as exc:
        return {"problem": f"line {exc.lineno}: SyntaxError: {exc.msg}",
                "fix": f"correct the file (python -m py_compile {path.name} shows it)"}
    try:
        import stampede.load.plugin  # noqa: F401  (loaded first in every run, as locust -f entry.py,FILE does)
        from locust.util.load_locustfile import load_locustfile

        found, _shapes = load_locustfile(str(path))
    except ModuleNotFoundError as exc:
        top = (exc.name or str(exc)).split(".")[0]
        return {"problem": f"cannot import it: ModuleNotFoundError: No module named {exc.name!r}{_where(exc, path)}",
                "fix": f"install the package that provides {top} into Stampede's environment (for example "
                       f"build/venv/bin/python -m pip install {top.replace('_', '-')}), or remove the import"}
    except BaseException as exc:  # noqa: BLE001 - anything the file's own code raises on import
        return {"problem": f"importing it raised {type(exc).__name__}: {_one_line(exc)}{_where(exc, path)}",
                "fix": "make the file importable on its own (python -c 'import …' from its folder shows why)"}
    missing = [name for name in user_classes if name not in found]
    if missing:
        has = ", ".join(sorted(found)) or "none"
        return {"problem": f"journeys.{missing[0]}: no User class of that name in the file (it has: {has})",
                "fix": "name one of its User classes in journeys"}
    return {}


def _where(exc: BaseException, path: Path) -> str:
    """`` (line N)`` of the locustfile where the import failed, when the traceback passes through it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f" (line {frames[-1].lineno})" if frames else ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    outcome = check(Path(args[0]), args[1:])
    sys.stdout.flush()
    print(MARK + json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
