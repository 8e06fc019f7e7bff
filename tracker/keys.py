"""Redis key names and the H3 cell encoding of the position index.

Every key of an organisation starts with the hash tag ``{org}``, so a Redis
Cluster keeps all of one organisation's keys on one slot, where the ingest
script needs several of them together.

==============================  ======  =========================================
key                             type    contents
==============================  ======  =========================================
``{org}:meta``                  hash    name, created_at, privacy settings
``{org}:dev:{id}``              hash    latest fix, H3 cell score, open jobs
``{org}:hist:{id}``             zset    every accepted ping, scored by fix time
``{org}:cells``                 zset    device ids scored by their H3 cell
``{org}:heat``                  hash    devices per position cell (heatmap)
``{org}:contractors``           hash    contractor id -> JSON record
``{org}:job:{id}``              hash    job record, status, flags, ETA, window
``{org}:job:{id}:events``       stream  the job's timeline
``{org}:jobs:open``             set     ids of jobs not yet closed
``{org}:events``                stream  every job event of the organisation
``{org}:webhooks``              hash    webhook id -> JSON subscription
``{org}:live``                  pubsub  positions and job events
``enroute:apikey:{hash}``       string  organisation of an API key
``enroute:device:{hash}``       string  organisation and contractor of a token
``enroute:share:{hash}``        string  organisation, job and expiry of a link
``enroute:webhook-orgs``        set     organisations with webhooks
``enroute:orgs``                set     organisation ids
==============================  ======  =========================================

Position index: a cell of resolution ``res`` is stored as the sorted-set
score ``cell & (2**52 - 1)``, which drops the mode and resolution bits and
keeps the base cell and the fifteen 3-bit digits. That value is below
2**52, so a double represents it exactly, and all cells that share a coarser
parent form one contiguous score range: heatmaps and nearby searches at any
coarser resolution read ranges instead of rescanning history.
"""

from __future__ import annotations

import re

import h3

# Bits of an H3 index: mode (4 bits) at 59, resolution (4 bits) at 52.
_CELL_MODE_BITS = 1 << 59
_RES_SHIFT = 52
_SCORE_MASK = (1 << 52) - 1
_DIGIT_BITS = 3
_MAX_RES = 15

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ORG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def check_id(field: str, value: object) -> str:
    """Return ``value`` if it is a valid contractor or job id, else raise."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValueError(
            f"{field} must be 1-64 characters of letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit, got {value!r}"
        )
    return value


def cell_to_score(cell: str) -> int:
    """Encode an H3 cell as an exact sorted-set score."""
    return h3.str_to_int(cell) & _SCORE_MASK


def score_to_cell(score: int, res: int) -> str:
    """Decode a score written by :func:`cell_to_score` at resolution ``res``."""
    return h3.int_to_str(int(score) | _CELL_MODE_BITS | (res << _RES_SHIFT))


def score_range(cell: str) -> tuple[int, int]:
    """Return the inclusive score range of every finer cell inside ``cell``.

    The finer cells share the parent's base cell and leading digits, so
    clearing the parent's unused digits gives the low end and setting them
    gives the high end.
    """
    res = h3.get_resolution(cell)
    unused_bits = _DIGIT_BITS * (_MAX_RES - res)
    score = cell_to_score(cell)
    low = (score >> unused_bits) << unused_bits
    return low, low | ((1 << unused_bits) - 1)


def parent_scores(scores: object, res: int, parent_res: int) -> object:
    """Map scores of cells at ``res`` to their parent cells' integer ids.

    Works on a numpy array of int64 scores: the parent's unused digits are
    set to 7 and the mode and resolution bits restored, so the results are
    H3 cell integers at ``parent_res``.
    """
    unused_bits = _DIGIT_BITS * (_MAX_RES - parent_res)
    fill = (1 << unused_bits) - 1
    header = _CELL_MODE_BITS | (parent_res << _RES_SHIFT)
    return ((scores >> unused_bits) << unused_bits) | fill | header  # type: ignore[operator]


def meta(org: str) -> str:
    return f"{{{org}}}:meta"


def device(org: str, device_id: str) -> str:
    return f"{{{org}}}:dev:{device_id}"


def history(org: str, device_id: str) -> str:
    return f"{{{org}}}:hist:{device_id}"


def cells(org: str) -> str:
    return f"{{{org}}}:cells"


def heat(org: str) -> str:
    return f"{{{org}}}:heat"


def contractors(org: str) -> str:
    return f"{{{org}}}:contractors"


def job(org: str, job_id: str) -> str:
    return f"{{{org}}}:job:{job_id}"


#: Job hash fields that the lifecycle reads with every ping: all but the
#: route, which can be several kilobytes and only the tracking view needs.
#: ingest.lua returns them for the device's active jobs, in this order.
JOB_LOADED_FIELDS = (
    "doc", "status", "visit", "flags", "eta_s", "eta_t", "awin",
    "det", "det_t", "en_route_t", "smoother",
)  # fmt: skip


def job_events(org: str, job_id: str) -> str:
    return f"{{{org}}}:job:{job_id}:events"


def open_jobs(org: str) -> str:
    return f"{{{org}}}:jobs:open"


def org_events(org: str) -> str:
    return f"{{{org}}}:events"


def webhooks(org: str) -> str:
    return f"{{{org}}}:webhooks"


def webhook_log(org: str) -> str:
    return f"{{{org}}}:webhooks:log"


def live_channel(org: str) -> str:
    return f"{{{org}}}:live"


def api_key(key_hash: str) -> str:
    return f"enroute:apikey:{key_hash}"


def device_token(token_hash: str) -> str:
    return f"enroute:device:{token_hash}"


def share_token(token_hash: str) -> str:
    return f"enroute:share:{token_hash}"


ORGS = "enroute:orgs"
