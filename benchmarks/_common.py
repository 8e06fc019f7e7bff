"""Helpers shared by the benchmarks: machine description and the results page.

Every benchmark records its figures in one section of
``benchmarks/RESULTS.md`` (``## Ingest``, ``## ETA``, ``## Geofence``, ...).
Several benchmarks may write the page at the same time, so
:func:`update_section` takes an exclusive lock on a sidecar lock file,
re-reads the page, replaces only the text of its own section and swaps the
new page in with an atomic rename.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_TITLE = "# Benchmark results"
RESULTS_INTRO = (
    "Each benchmark appends its rows to its own section below. Figures "
    "depend on the machine, so every row names the machine, the date and "
    "the command that produced it."
)


def cpu_model() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, or the platform's guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """Describe the machine in one line: OS, architecture, CPU model and cores.

    Examples
    --------
    >>> machine_description()  # doctest: +SKIP
    'Linux x86_64, AMD EPYC, 2 cores, 23.5 GiB, Python 3.11.7'
    """
    cores = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    memory_gib = psutil.virtual_memory().total / 2**30
    python = ".".join(str(part) for part in sys.version_info[:3])
    return (
        f"{platform.system()} {platform.machine()}, {cpu_model()}, {cores} cores, "
        f"{memory_gib:.1f} GiB, Python {python}"
    )


def today() -> str:
    """Return today's UTC date as ``YYYY-MM-DD``."""
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def command_line(module: str, argv: Sequence[str]) -> str:
    """Return the shell command that reruns a benchmark module with ``argv``."""
    return shlex.join(["python", "-m", module, *argv])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # The lock file is in the temporary folder, so it never shows up in the
    # work tree. Its name is derived from the page's absolute path.
    digest = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"enroute-results-{digest}.lock"
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _split_sections(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split a page into its preamble lines and ``(heading, body lines)`` pairs."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return preamble, sections


def update_section(
    heading: str,
    rewrite: Callable[[str], str],
    path: Path = RESULTS_PATH,
) -> None:
    """Rewrite the body of one ``## heading`` section of a Markdown page.

    Parameters
    ----------
    heading
        Section title without the ``## `` prefix, for example ``"Ingest"``.
    rewrite
        Called with the section's current body (``""`` when the section is
        missing) and returns the new body. It runs while the page is locked,
        on text read just before the write, so rows that another benchmark
        added a moment earlier are kept.
    path
        The page; created with a title when missing.

    Notes
    -----
    Only the lines between the heading and the next line starting with
    ``## `` change. The lock is an advisory ``flock`` on a file in the
    temporary folder, so it protects only against writers that use this
    function too.
    """
    with _locked(path):
        text = path.read_text() if path.exists() else f"{RESULTS_TITLE}\n\n{RESULTS_INTRO}\n"
        preamble, sections = _split_sections(text)
        body = "\n".join(next((lines for name, lines in sections if name == heading), []))
        new_lines = ["", *rewrite(body.strip("\n")).strip("\n").splitlines(), ""]
        if any(name == heading for name, _ in sections):
            sections = [(name, new_lines if name == heading else lines) for name, lines in sections]
        else:
            if preamble and preamble[-1].strip():
                preamble.append("")
            if sections and sections[-1][1] and sections[-1][1][-1].strip():
                sections[-1][1].append("")
            sections.append((heading, new_lines))

        out = list(preamble)
        for name, lines in sections:
            out.append(f"## {name}")
            out.extend(lines)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text("\n".join(out).rstrip("\n") + "\n")
        os.replace(temporary, path)


def append_table_rows(
    body: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
) -> str:
    """Append rows to the Markdown table under a ``### title`` line of ``body``.

    The table, with its ``### title`` line and header, is added at the end of
    ``body`` when missing. Cells are converted with ``str``, and ``|`` inside
    a cell is escaped.
    """
    new_rows = ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    lines = body.splitlines()
    marker = f"### {title}"
    if marker not in lines:
        header = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join(" --- " for _ in columns) + "|",
        ]
        spacer = [""] if lines and lines[-1].strip() else []
        return "\n".join([*lines, *spacer, marker, "", *header, *new_rows])

    # Insert after the last table line that follows the title, before the
    # next subsection.
    index = lines.index(marker) + 1
    while index < len(lines) and not lines[index].startswith(("|", "### ")):
        index += 1
    while index < len(lines) and lines[index].startswith("|"):
        index += 1
    return "\n".join([*lines[:index], *new_rows, *lines[index:]])


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")
