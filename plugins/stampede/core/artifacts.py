"""A run folder: the one door through which the pipeline's steps read and write a run's artifacts.

Every artifact has a name (:class:`stampede.core.paths.Artifact`). Where they
live is chosen by configuration, once, here:

- **a local folder** (the default: ``reports/<run tag>/``), enough when every
  task of a run lands on one host (``make demo``, the CLI, LocalExecutor);
- **object storage** for a deployment whose tasks land on hosts that share no
  disk (Celery or Kubernetes workers): ``STAMPEDE_ARTIFACTS_URL=s3://bucket/prefix``,
  through Airflow's ``ObjectStoragePath`` and the connection
  ``STAMPEDE_ARTIFACTS_CONN_ID`` (default ``aws_default``; its ``endpoint_url``
  extra points it at any S3-compatible store).

With object storage the store is the truth and the local folder a scratch copy
on the host that runs the step: every write goes to both (the object is put
after the local file is complete), every read comes from the store. Tools that
write files themselves into the local folder (the Locust master, the report's
charts) are followed by :meth:`RunFolder.publish`; tools that read local files
are preceded by :meth:`RunFolder.fetch`.

Writes are atomic (a temporary file, then a rename; an object put is whole or
absent), so a reader in another task never sees half a file, and a retried
step overwrites its own output: steps are idempotent by run.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stampede.core.errors import Refusal
from stampede.core.paths import Artifact
from stampede.core.records import RunResult, loads, read_results, write_results

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

ENV_STORE = "STAMPEDE_ARTIFACTS_URL"
ENV_CONN_ID = "STAMPEDE_ARTIFACTS_CONN_ID"
DEFAULT_CONN_ID = "aws_default"
SCHEMES = ("s3",)


def store_url() -> str | None:
    """``$STAMPEDE_ARTIFACTS_URL`` (``s3://bucket/prefix``), or None: the local folder only."""
    url = (os.environ.get(ENV_STORE) or "").strip().rstrip("/")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc or "@" in parts.netloc:
        raise Refusal(ENV_STORE, f"{url!r} is not s3://bucket/prefix",
                      f"set it like s3://stampede-artifacts/runs (the connection goes in {ENV_CONN_ID})")
    return url


def store_root(url: str | None = None) -> ObjectStoragePath | None:
    """The store's root as an ``ObjectStoragePath`` (None without a store)."""
    url = url or store_url()
    if url is None:
        return None
    return _object_path(url, os.environ.get(ENV_CONN_ID) or DEFAULT_CONN_ID)


@lru_cache(maxsize=8)
def _object_path(url: str, conn_id: str) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=conn_id)


class RunFolder:
    """The files of one run: a local folder, and its copy in object storage when one is configured.

    :param path: the local folder (on a deployment: this host's scratch copy).
    :param store: the run's folder in object storage, or None.
    """

    def __init__(self, path: Path, store: ObjectStoragePath | None = None) -> None:
        self.path = Path(path)
        self.store = store

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}{f', {self.store.as_uri()!r}' if self.store is not None else ''})"

    # -- where things are ---------------------------------------------------------------------
    def file(self, artifact: Artifact | str) -> Path:
        """The local path of ``artifact`` (its folder created), for tools that write files themselves."""
        path = self.path / str(artifact)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def sub(self, name: str) -> RunFolder:
        """A folder inside this one (a breaking-point level, the cloud workers' stand-ins)."""
        return RunFolder(self.path / name, self.store / name if self.store is not None else None)

    def uri(self, artifact: Artifact | str | None = None) -> str:
        """Where ``artifact`` (or the folder) lives, for people: ``s3://bucket/…`` or the local path."""
        if self.store is not None:
            target = self.store / str(artifact) if artifact else self.store
            return target.as_uri()  # as_uri: without the connection id str() puts in the address
        return str(self.path / str(artifact) if artifact else self.path)

    # -- reading and writing ------------------------------------------------------------------
    def exists(self, artifact: Artifact | str) -> bool:
        if self.store is not None:
            return (self.store / str(artifact)).exists()
        return (self.path / str(artifact)).exists()

    def remove(self, artifact: Artifact | str) -> None:
        (self.path / str(artifact)).unlink(missing_ok=True)
        if self.store is not None:
            target = self.store / str(artifact)
            if target.exists():
                target.unlink()

    def read_text(self, artifact: Artifact | str) -> str:
        if self.store is not None:
            return (self.store / str(artifact)).read_text()
        return (self.path / str(artifact)).read_text()

    def write_text(self, artifact: Artifact | str, text: str) -> Path:
        path = self.file(artifact)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        self.publish(artifact)
        return path

    def read_json(self, artifact: Artifact | str, default: Any = None, *, keys: tuple[str, ...] | None = None) -> Any:
        """The artifact's JSON (``default`` when it is missing); ``keys``: of an object, only these top-level keys."""
        if not self.exists(artifact):
            return default
        return loads(self.read_text(artifact), keys=keys)

    def write_json(self, artifact: Artifact | str, data: Any, *, indent: int | None = 2) -> Path:
        return self.write_text(artifact, json.dumps(data, indent=indent, default=str))

    def results(self) -> RunResult:
        return read_results(self.fetch(Artifact.RESULTS))

    def write_results(self, result: RunResult) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        path = write_results(result, self.path / Artifact.RESULTS)
        self.publish(Artifact.RESULTS)
        return path

    # -- the local copy and the store -----------------------------------------------------------
    def publish(self, artifact: Artifact | str) -> None:
        """Copy the local ``artifact`` (a file, or a folder and all it holds) to the store; no store: nothing to do.

        For what a tool wrote into :meth:`file` paths by itself. A local file that is
        missing is not an error (the tool may have written nothing).
        """
        if self.store is None:
            return
        local = self.path / str(artifact)
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for path in files:
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            target = self.store / path.relative_to(self.path).as_posix()
            with path.open("rb") as source, target.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)

    def fetch(self, artifact: Artifact | str) -> Path:
        """The local path of ``artifact``, brought from the store first (a file, or a folder and all it holds).

        For tools that read local files. Without a store, or when the store lacks it,
        the path is returned as it is (it may not exist).
        """
        local = self.path / str(artifact)
        if self.store is None:
            return local
        remote = self.store / str(artifact)
        if remote.is_dir():
            sources = [p for p in remote.rglob("*") if p.is_file()]
        elif remote.exists():
            sources = [remote]
        else:
            return local
        for source in sources:
            path = self.path / source.relative_to(self.store).as_posix()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with source.open("rb") as stream, tmp.open("wb") as sink:
                while chunk := stream.read(1 << 20):
                    sink.write(chunk)
            tmp.replace(path)
        return local
