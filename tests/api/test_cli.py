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


def cut_pbf(path: Path) -> Path:
    """Write the first 3000 bytes of the bundled Helsinki extract to ``path``."""
    from eta.build import default_source_path

    path.write_bytes(default_source_path().read_bytes()[:3000])
    return path


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.osm", b'<osm version="0.6"><node id="1" lat="60.1"', "XML parsing error"),
        ("noversion.osm", b"<osm></osm>", "missing version attribute"),
        ("random.osm.pbf", bytes(range(256)) * 4, "PBF error"),
        ("empty.osm.pbf", b"", "PBF error"),
        ("broken.graphml", b"<graphml><graph", "as GraphML"),
    ],
)
def test_graph_build_corrupt_file_error(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    result = enroute("graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"enroute: could not parse {source} as ")
    assert reason in message


def test_graph_build_cut_pbf_error(tmp_path: Path) -> None:
    source = cut_pbf(tmp_path / "cut.osm.pbf")
    result = enroute("graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"enroute: could not parse {source} as OSM data: PBF error: unexpected EOF"
    )


def test_graph_build_debug_shows_traceback(tmp_path: Path) -> None:
    source = tmp_path / "random.osm.pbf"
    source.write_bytes(bytes(range(256)) * 4)
    result = enroute("--log-level", "debug", "graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: PBF error" in result.stderr


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
