"""On-disk cache of compiled road graphs, keyed by the source's content.

A cached graph is a ``.enroute-graph-<key>.npz`` file. The key hashes the
SHA-256 of the source file's bytes together with the graph format version,
the speed table version and the country used for speeds. Any change to the
data or to the modelling therefore makes a new key, and the next load
rebuilds.

By default the cache sits next to the source. When that folder is
read-only, it goes to ``$XDG_CACHE_HOME/enroute/graphs`` (by default
``~/.cache/enroute/graphs``). A folder whose permission bits grant no write
access counts as read-only even for root, so a read-only data folder is
never written to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import zipfile
from pathlib import Path

from eta.graph import GRAPH_FORMAT_VERSION, RoadGraph
from eta.speeds import SPEED_TABLE_VERSION

logger = logging.getLogger(__name__)

CACHE_FILE_PREFIX = ".enroute-graph-"


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(source_hash: str, country: str | None) -> str:
    """Return the cache key for a source hash, format and speed versions, and country."""
    text = f"{source_hash}|{GRAPH_FORMAT_VERSION}|{SPEED_TABLE_VERSION}|{country or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_file_name(key: str) -> str:
    """Return the file name of the cached graph with this key."""
    return f"{CACHE_FILE_PREFIX}{key}.npz"


def default_cache_dir() -> Path:
    """Return the per-user cache folder for graphs whose source folder is read-only."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "enroute" / "graphs"


def cache_dirs(source_path: Path | None, cache_dir: Path | None) -> list[Path]:
    """Return the folders to look in, in order: ``cache_dir`` alone if given."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    dirs = [source_path.parent] if source_path is not None else []
    return [*dirs, default_cache_dir()]


def is_writable_dir(path: Path) -> bool:
    """Return True when ``path`` is a folder this process may write into.

    A folder without any write permission bit counts as read-only, even for
    root, which the operating system would let write anyway.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    has_write_bits = bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return stat.S_ISDIR(mode) and has_write_bits and os.access(path, os.W_OK)


def read_cached(dirs: list[Path], key: str, source_hash: str) -> RoadGraph | None:
    """Return the cached graph for ``key`` from the first folder that has a valid one."""
    name = cache_file_name(key)
    for folder in dirs:
        path = folder / name
        if not path.is_file():
            continue
        try:
            graph = RoadGraph.load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            logger.warning("Ignoring unreadable graph cache %s: %s", path, exc)
            continue
        if graph.source_hash != source_hash:
            logger.warning(
                "Ignoring graph cache %s: it was built from other data", path
            )
            continue
        return graph
    return None


def write_cached(graph: RoadGraph, dirs: list[Path], key: str) -> Path | None:
    """Write a graph to the first writable folder; return its path, or None.

    The file is written under a temporary name and renamed into place, so a
    concurrent reader never sees a partial file.
    """
    name = cache_file_name(key)
    for folder in dirs:
        if folder == default_cache_dir() or not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
        if not is_writable_dir(folder):
            logger.info(
                "Graph cache folder %s is read-only; trying the next one", folder
            )
            continue
        try:
            _write_atomically(graph, folder / name)
        except OSError as exc:
            logger.warning("Could not write graph cache in %s: %s", folder, exc)
            continue
        path = folder / name
        logger.info(
            "Cached road graph in %s (%.1f MB)", path, path.stat().st_size / 1e6
        )
        return path
    logger.warning(
        "No writable folder for the graph cache among %s", [str(d) for d in dirs]
    )
    return None


def _write_atomically(graph: RoadGraph, path: Path) -> None:
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=CACHE_FILE_PREFIX, suffix=".tmp", delete=False
    ) as tmp:
        tmp_path = Path(tmp.name)
    try:
        graph.save(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
