"""json-server, a third-party REST API from npm, on a free loopback port: a target no one here wrote.

Stampede's cleanup must work on a team's own API, not only on the CRM contract
it ships. json-server (0.17.4, pinned with its whole dependency tree in
``infra/npm/package-lock.json``) serves the collections of a JSON file as a
REST API: ``POST /showings`` answers 201 with the new entity and an ``id`` that
is the largest id plus one (so a deleted id is handed out again),
``GET /showings?q=text&_page=2&_limit=100`` searches every field,
``DELETE /showings/17`` answers 200, and 404 once it is gone.

``make setup`` installs it into ``build/npm`` (``npm ci`` from the lock);
:func:`ensure_installed` does the same for a test session that starts without
it. Node 20 and npm are the only requirements.

    with JsonServer(workdir=tmp_path, data={"showings": []}) as api:
        httpx.post(f"{api.base_url}/showings", json={"notes": "LT-abc viewing"})
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from stampede.infra.loopback_process import LoopbackProcess

NPM_FILES = Path(__file__).resolve().parent / "npm"
SCRIPT = NPM_FILES / "json_server.js"
INSTALL_TIMEOUT_S = 300


def npm_dir() -> Path:
    """Where the npm packages go: ``$STAMPEDE_NPM_DIR``, else ``build/npm`` of the checkout."""
    configured = os.environ.get("STAMPEDE_NPM_DIR")
    if configured:
        return Path(configured)
    checkout = NPM_FILES.parents[1]
    if (checkout / "Makefile").is_file():
        return checkout / "build" / "npm"
    return Path.home() / ".cache" / "stampede" / "npm"


def ensure_installed() -> Path:
    """json-server installed from the lock (``npm ci``) unless it already is; returns its ``node_modules``."""
    target = npm_dir()
    target.mkdir(parents=True, exist_ok=True)
    modules = target / "node_modules"
    with open(target / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time (parallel test sessions)
        lock_file = target / "package-lock.json"
        if (modules / "json-server" / "package.json").is_file() and lock_file.is_file() \
                and lock_file.read_bytes() == (NPM_FILES / "package-lock.json").read_bytes():
            return modules
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("json-server: npm is not on PATH; fix: install Node.js 20 or later (npm comes with it)")
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NPM_FILES / name, target / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target,
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"json-server: npm ci failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}; "
                               "fix: check that the npm registry is reachable, then run make setup")
    return modules


class JsonServer:
    """json-server in a child process on a free loopback port, serving ``data`` (context manager)."""

    def __init__(self, *, workdir: Path, data: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.data = data if data is not None else {"showings": []}
        self.db = self.workdir / "db.json"
        self.base_url = ""
        self._process: LoopbackProcess | None = None

    def __enter__(self) -> JsonServer:
        modules = ensure_installed()
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("json-server: node is not on PATH; fix: install Node.js 20 or later")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db.write_text(json.dumps(self.data))
        self._process = LoopbackProcess("json-server", ["--db", str(self.db)], workdir=self.workdir,
                                        command=[node, str(SCRIPT)], env={**os.environ, "NODE_PATH": str(modules)})
        self.base_url = self._process.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None:
            self._process.stop()

    @property
    def pid(self) -> int:
        return self._process.pid if self._process else 0

    def items(self, collection: str) -> list[dict[str, Any]]:
        """Everything in ``collection`` now (from the server, not the file)."""
        import httpx

        response = httpx.get(f"{self.base_url}/{collection}", timeout=30, trust_env=False)
        response.raise_for_status()
        return response.json()
