"""ETAs and arrival windows of en-route jobs, on the process's road graph.

Each en-route job gets one reverse shortest-path tree to its site, built
once per process and kept in an LRU cache, so a ping's ETA is a snap and a
lookup. The arrival window comes from the organisation's error model, which
learns from every completed trip, and a per-job smoother keeps it steady
from ping to ping. Every prediction is logged on the job, so arrivals can
calibrate the model and the coverage of the windows can be measured.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from eta.build import load_graph
from eta.graph import RoadGraph
from eta.routing import DestinationTree, build_tree
from eta.snap import Snap, snap_point, snap_points
from eta.windows import ErrorModel, WindowSmoother
from tracker import keys
from tracker.batch import Batch, BoundedCache
from tracker.jobs import Job, eta_update_json, window_json
from tracker.pings import Ping
from tracker.store import RedisClient

logger = logging.getLogger(__name__)

TREE_CACHE_SIZE = 2_000
MODEL_CACHE_S = 30.0
MAX_PREDICTIONS = 2_000
TRIM_EVERY = 50
# Batches smaller than this are snapped ping by ping: a vectorized call
# costs about as much as four scalar ones on the bundled Helsinki graph.
VECTOR_SNAP_MIN = 4
# Lead times at which the window coverage of each arrival is recorded.
COVERAGE_LEAD_TIMES_S = (60.0, 180.0, 300.0, 600.0)
# A route is stored for display about this often per job (0.5 to 1.5 times).
ROUTE_REFRESH_S = 5.0
# A job without an ETA (its contractor off the network) is logged at most
# this often.
NO_ETA_WARNING_S = 300.0


@dataclass(slots=True)
class EtaRequest:
    """A job whose ETA a ping should refresh."""

    org: str
    job: Job
    ping: Ping
    #: The job hash's ``smoother`` field as read with the job (None: no state yet).
    smoother_state: bytes | None
    #: Other job hash fields to write in the same HSET.
    extra_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EtaUpdate:
    """The result of one ETA refresh."""

    eta_s: float
    earliest_t: float
    latest_t: float
    confidence: float
    #: The live message queued for the job, sent when the batch runs.
    message: dict[str, Any] | None = None


def site_point(site: dict[str, Any]) -> tuple[float, float]:
    """Return the (lat, lon) that routes aim at: a circle's centre or a ring's mean."""
    if site.get("type") == "Polygon":
        ring = site["coordinates"][0][:-1] or site["coordinates"][0]
        return (
            sum(point[1] for point in ring) / len(ring),
            sum(point[0] for point in ring) / len(ring),
        )
    return float(site["lat"]), float(site["lon"])


class EtaService:
    """Trees, error models and the per-job window state of one process."""

    def __init__(self, client: RedisClient, graph: RoadGraph, confidence: float = 0.8) -> None:
        self.client = client
        self.graph = graph
        self.confidence = confidence
        self._trees: OrderedDict[tuple[str, str], DestinationTree | None] = OrderedDict()
        self._models: dict[str, tuple[float, ErrorModel]] = {}
        self._route_due_t: dict[tuple[str, str], float] = {}
        self._predictions_written: dict[tuple[str, str], int] = {}
        self._no_eta_warned: dict[tuple[str, str], float] = {}
        # Window smoothers as last written, with their encoding, so one read
        # back unchanged needs no decoding. update() changes them in place.
        self._smoothers: BoundedCache[tuple[bytes, WindowSmoother]] = BoundedCache()

    @classmethod
    async def create(cls, client: RedisClient, source: str | None, cache_dir: str | None) -> EtaService:
        """Load the road graph (from its cache when built before) in a thread."""
        started = time.perf_counter()
        graph = await asyncio.to_thread(load_graph, source, cache_dir=cache_dir)
        logger.info(
            "road graph loaded: %d nodes, %d edges in %.2f s",
            graph.num_nodes, graph.num_edges, time.perf_counter() - started,
        )
        return cls(client, graph)

    def tree_for(self, org: str, job: Job) -> DestinationTree | None:
        """Return the job's reverse tree, or None when its site is off the network."""
        cache_key = (org, job.id)
        if cache_key in self._trees:
            self._trees.move_to_end(cache_key)
            return self._trees[cache_key]
        lat, lon = site_point(job.site)
        try:
            tree: DestinationTree | None = build_tree(self.graph, lat, lon)
        except LookupError as error:
            logger.warning("no route to job %s of org %s: %s", job.id, org, error)
            tree = None
        self._trees[cache_key] = tree
        if len(self._trees) > TREE_CACHE_SIZE:
            self._trees.popitem(last=False)
        return tree

    def tree_to_point(self, lat: float, lon: float) -> DestinationTree | None:
        """Return a reverse tree to any point, or None when it is off the network."""
        try:
            return build_tree(self.graph, lat, lon)
        except LookupError as error:
            logger.warning("no tree to (%.6f, %.6f): %s", lat, lon, error)
            return None

    async def model(self, org: str) -> ErrorModel:
        """Return the organisation's error model, re-read at most every 30 s."""
        cached = self._models.get(org)
        if cached is not None and time.monotonic() - cached[0] < MODEL_CACHE_S:
            return cached[1]
        raw = await self.client.get(keys.meta(org) + ":eta-model")
        model = ErrorModel.from_dict(orjson.loads(raw)) if raw else ErrorModel()
        self._models[org] = (time.monotonic(), model)
        return model

    async def update_many(self, requests: list[EtaRequest], batch: Batch) -> list[EtaUpdate | None]:
        """Refresh the ETAs and windows of many jobs; None where a ping is off the network.

        The pings are snapped in one vectorized call. Each job's fields,
        prediction and live message are added to ``batch``, which the caller
        sends.
        """
        if not requests:
            return []
        models = {org: await self.model(org) for org in {request.org for request in requests}}
        snaps = self._snap([request.ping for request in requests])
        updates: list[EtaUpdate | None] = []
        for request, snap in zip(requests, snaps):
            tree = self.tree_for(request.org, request.job)
            if tree is None:
                updates.append(None)
                continue
            if snap is None:
                self._warn_no_eta(request, "is off the road network")
                updates.append(None)
                continue
            eta_s = tree.eta_for_snap(snap)
            if not math.isfinite(eta_s):
                self._warn_no_eta(request, "has no route to the site")
                updates.append(None)
                continue
            updates.append(self._record(request, tree, snap, eta_s, models[request.org], batch))
        return updates

    def _snap(self, pings: list[Ping]) -> list[Snap | None]:
        """Snap pings onto the road graph; None for those off the network."""
        if len(pings) < VECTOR_SNAP_MIN:
            return [snap_point(self.graph, ping.lat, ping.lon, warn=False) for ping in pings]
        snaps = snap_points(
            self.graph,
            np.fromiter((ping.lat for ping in pings), float, len(pings)),
            np.fromiter((ping.lon for ping in pings), float, len(pings)),
            warn=False,
        )
        return snaps.rows()

    def _warn_no_eta(self, request: EtaRequest, reason: str) -> None:
        # A contractor off the network sends several pings a minute, so the
        # warning repeats at most every NO_ETA_WARNING_S per job.
        key = (request.org, request.job.id)
        now = time.monotonic()
        if now - self._no_eta_warned.get(key, -math.inf) < NO_ETA_WARNING_S:
            return
        if len(self._no_eta_warned) >= TREE_CACHE_SIZE:
            self._no_eta_warned.clear()
        self._no_eta_warned[key] = now
        logger.warning(
            "no ETA for job %s of org %s: contractor %s at (%.6f, %.6f) %s",
            request.job.id, request.org, request.job.contractor_id,
            request.ping.lat, request.ping.lon, reason,
        )  # fmt: skip

    def _record(
        self,
        request: EtaRequest,
        tree: DestinationTree,
        snap: Snap,
        eta_s: float,
        model: ErrorModel,
        batch: Batch,
    ) -> EtaUpdate:
        org, job, ping = request.org, request.job, request.ping
        written = self._smoothers.get((org, job.id))
        if written is not None and written[0] == request.smoother_state:
            smoother = written[1]
        elif request.smoother_state:
            smoother = WindowSmoother.from_dict(orjson.loads(request.smoother_state))
        else:
            smoother = WindowSmoother()
        window = smoother.update(ping.t, eta_s, model, self.confidence)
        encoded_smoother = orjson.dumps(smoother.to_dict())
        self._smoothers.put((org, job.id), (encoded_smoother, smoother))
        # Whole seconds, widened outwards: finer times mean nothing to a
        # customer, and repeated times reuse their cached ISO text.
        awin = {
            "earliest_t": float(math.floor(window.earliest_t)),
            "latest_t": float(math.ceil(window.latest_t)),
            "confidence": window.confidence,
        }
        fields: dict[str, Any] = {
            "eta_s": repr(eta_s),
            "eta_t": repr(ping.t),
            "awin": orjson.dumps(awin),
            "smoother": encoded_smoother,
            **request.extra_fields,
        }
        message: dict[str, Any] = {"type": "job", "job": None, "awin": awin}
        route_key = (org, job.id)
        if ping.t >= self._route_due_t.get(route_key, 0.0):
            # A random spread of the refresh interval keeps jobs dispatched
            # together from computing their routes in the same moment.
            self._route_due_t[route_key] = ping.t + ROUTE_REFRESH_S * random.uniform(0.5, 1.5)
            if len(self._route_due_t) > TREE_CACHE_SIZE * 4:
                self._route_due_t.clear()
                self._predictions_written.clear()
            points = tree.route_for_snap(snap)
            if points is not None:
                route = np.round(np.array(points), 6).tolist()
                fields["route"] = orjson.dumps(route)
                job.route = route
                # Viewers keep the last route, so it travels only when it changes.
                message["route"] = route
        job_key = keys.job(org, job.id)
        batch.hset(job_key, fields)
        batch.command("RPUSH", job_key + ":pred", orjson.dumps({"t": ping.t, "eta_s": eta_s, **awin}))
        # Trimmed every TRIM_EVERY predictions of this process, so the log
        # keeps about MAX_PREDICTIONS entries and one LTRIM serves many pings.
        predictions = self._predictions_written.get(route_key, 0) + 1
        self._predictions_written[route_key] = predictions
        if predictions % TRIM_EVERY == 1:
            batch.command("LTRIM", job_key + ":pred", -MAX_PREDICTIONS, -1)
        job.eta_s, job.eta_t, job.arrival_window = eta_s, ping.t, awin
        message["job"] = eta_update_json(job)
        batch.publish(org, message)
        return EtaUpdate(eta_s, awin["earliest_t"], awin["latest_t"], window.confidence, message)

    async def record_arrival(self, org: str, job: Job, arrival_t: float) -> None:
        """Calibrate the error model with a finished trip and log window coverage."""
        job_key = keys.job(org, job.id)
        raw = await self.client.lrange(job_key + ":pred", 0, -1)
        predictions = [orjson.loads(item) for item in raw]
        predictions = [p for p in predictions if p["t"] <= arrival_t]
        if not predictions:
            return
        model = await self.model(org)
        for prediction in predictions:
            model.observe(prediction["eta_s"], arrival_t - prediction["t"])
        coverage = []
        for lead_s in COVERAGE_LEAD_TIMES_S:
            target_t = arrival_t - lead_s
            before = [p for p in predictions if p["t"] <= target_t]
            if not before or target_t - before[-1]["t"] > max(30.0, lead_s * 0.25):
                continue
            chosen = before[-1]
            coverage.append(
                {
                    "lead_s": lead_s,
                    "inside": chosen["earliest_t"] <= arrival_t <= chosen["latest_t"],
                    "width_s": chosen["latest_t"] - chosen["earliest_t"],
                }
            )
        record = {"job_id": job.id, "arrival_t": arrival_t, "coverage": coverage}
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.meta(org) + ":eta-model", orjson.dumps(model.to_dict()))
        pipe.rpush(keys.meta(org) + ":coverage", orjson.dumps(record))
        pipe.ltrim(keys.meta(org) + ":coverage", -10_000, -1)
        await pipe.execute()
        self._models[org] = (time.monotonic(), model)
        logger.info(
            "org %s job %s arrived at t=%.0f; model calibrated with %d predictions",
            org, job.id, arrival_t, len(predictions),
        )


__all__ = ["EtaRequest", "EtaService", "EtaUpdate", "site_point", "window_json"]
