"""A run folder: the one door through which the pipeline's steps read and write a run's artifacts.

Every artifact has a name (:class:`stampede.core.paths.Artifact`). Writes are
atomic (a temporary file, then a rename), so a reader in another task never
sees half a file, and a retried step overwrites its own output: steps are
idempotent by run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stampede.core.paths import Artifact
from stampede.core.records import RunResult, read_results, write_results


class RunFolder:
    """The files of one run, in a local folder (``reports/<run tag>/`` by default)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, artifact: Artifact | str) -> Path:
        """The local path of ``artifact`` (its folder created), for tools that write files themselves."""
        path = self.path / str(artifact)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def sub(self, name: str) -> RunFolder:
        """A folder inside this one (a breaking-point level, the cloud workers' stand-ins)."""
        return RunFolder(self.path / name)

    def exists(self, artifact: Artifact | str) -> bool:
        return (self.path / str(artifact)).exists()

    def remove(self, artifact: Artifact | str) -> None:
        (self.path / str(artifact)).unlink(missing_ok=True)

    def read_text(self, artifact: Artifact | str) -> str:
        return (self.path / str(artifact)).read_text()

    def write_text(self, artifact: Artifact | str, text: str) -> Path:
        path = self.file(artifact)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def read_json(self, artifact: Artifact | str, default: Any = None) -> Any:
        path = self.path / str(artifact)
        if not path.exists():
            return default
        return json.loads(path.read_text())

    def write_json(self, artifact: Artifact | str, data: Any, *, indent: int | None = 2) -> Path:
        return self.write_text(artifact, json.dumps(data, indent=indent, default=str))

    def results(self) -> RunResult:
        return read_results(self.path / Artifact.RESULTS)

    def write_results(self, result: RunResult) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return write_results(result, self.path / Artifact.RESULTS)
