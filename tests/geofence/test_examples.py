"""Run the examples in the geofence docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "geofence.detection",
    "geofence.fences",
    "geofence.index",
    "geofence.projection",
    "geofence.rings",
    "geofence.shapes",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)

    assert result.failed == 0
    assert result.attempted > 0
