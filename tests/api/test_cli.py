"""The ``enroute`` command line: graph build and org create."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT, shared_dir, unique_name


def enroute(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_graph_build_reports_graph(tmp_path: Path) -> None:
    shared = shared_dir()
    if shared is None:
        pytest.skip("shared test data not found beside the repository (set ENROUTE_SHARED_DIR)")
    result = enroute("graph", "build", str(shared / "data/osm/krems.osm.gz"), "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nodes" in result.stdout
    assert list(tmp_path.glob("*.npz"))


def test_graph_build_missing_file_error(tmp_path: Path) -> None:
    result = enroute("graph", "build", str(tmp_path / "nope.osm.pbf"))
    assert result.returncode == 1
    assert "nope.osm.pbf" in result.stderr


def test_org_create_twice_fails(redis_url: str) -> None:
    name = unique_name("twice")
    first = enroute("org", "create", name, "--redis-url", redis_url)
    second = enroute("org", "create", name, "--redis-url", redis_url)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    assert "exists already" in second.stderr


def test_org_create_prints_key_once(redis_url: str) -> None:
    result = enroute("org", "create", unique_name("print-key"), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ek_") == 1
