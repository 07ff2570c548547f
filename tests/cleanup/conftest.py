"""A demo target for the cleanup tests: one per session, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def cleanup_target() -> Iterator:
    from stampede.infra.demo_target.server import DemoTarget

    with DemoTarget() as target:
        yield target
