"""A demo target for the journey tests: one per session, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def journeys_target() -> Iterator:
    from stampede.infra.demo_target.server import DemoTarget

    with DemoTarget() as target:
        yield target
