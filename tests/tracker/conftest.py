"""Fixtures of the tracker tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def collect_leaked_sockets() -> Iterator[None]:
    """Collect garbage after each test, so a socket it left open fails that test.

    An unclosed socket or transport warns only when it is collected, which
    may be many tests later, in a test that has nothing to do with it.
    """
    yield
    gc.collect()
