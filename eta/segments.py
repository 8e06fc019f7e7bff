"""Spatial index of street segments, for finding the nearest road to a point.

Coordinates are projected metres (the graph's UTM zone).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import shapely
from scipy.spatial import cKDTree

from eta.geo import FloatArray, IntArray

if TYPE_CHECKING:
    from eta.graph import RoadGraph

# Spacing of the points sampled along segments for the nearest-segment
# search, and how many sampled neighbours each point looks at before the
# search falls back to an exhaustive one. On the bundled Helsinki graph, 24
# left no point of a batch of 20 to the exhaustive search (8 left a fifth),
# which made the batch a third faster. The scalar search loops in Python
# over its neighbours, so it looks at fewer.
SAMPLE_SPACING_M = 10.0
CANDIDATE_SAMPLES = 24
CANDIDATE_SAMPLES_ONE = 8

# Added to the radius of the exhaustive search, so that segments whose
# distance GEOS rounds differently from numpy are still compared.
TIE_MARGIN_M = 1e-3


class SegmentIndex:
    """Spatial indexes over the straight segments of each street's geometry.

    Two-way streets are indexed once, through their lower-numbered edge.
    The nearest segment comes from a scipy cKDTree over points sampled
    every SAMPLE_SPACING_M along each segment. The segment nearest to a ping
    has a sample within half the spacing of the ping's foot point. Checking
    every segment with a sample within (best distance + half the spacing)
    therefore finds it exactly. Rows where the fixed number of sampled
    neighbours cannot prove that fall back to a shapely STRtree, which also
    serves the heading search.
    """

    def __init__(self, graph: RoadGraph) -> None:
        streets = graph.street_edges
        starts = graph.geom_offsets[streets]
        counts = graph.geom_offsets[streets + 1] - starts - 1
        # segment k of street edge e runs from point geom_offsets[e] + k to the next
        self.edge = np.repeat(streets, counts)
        first_of_edge = np.repeat(np.cumsum(counts) - counts, counts)
        self.start = np.repeat(starts, counts) + np.arange(counts.sum()) - first_of_edge
        self.ax = graph.geom_x[self.start]
        self.ay = graph.geom_y[self.start]
        self.dx = graph.geom_x[self.start + 1] - self.ax
        self.dy = graph.geom_y[self.start + 1] - self.ay
        self.length2 = self.dx**2 + self.dy**2
        coords = np.stack(
            [
                np.column_stack((self.ax, self.ay)),
                np.column_stack((self.ax + self.dx, self.ay + self.dy)),
            ],
            axis=1,
        )
        self.tree = shapely.STRtree(shapely.linestrings(coords))

        # samples at both ends and at most SAMPLE_SPACING_M apart in between
        pieces = np.maximum(
            np.ceil(np.sqrt(self.length2) / SAMPLE_SPACING_M), 1
        ).astype(np.int64)
        self.sample_segment = np.repeat(np.arange(len(self.edge)), pieces + 1)
        first_sample = np.repeat(np.cumsum(pieces + 1) - (pieces + 1), pieces + 1)
        step = (np.arange(len(self.sample_segment)) - first_sample) / np.repeat(
            pieces, pieces + 1
        )
        sample_x = self.ax[self.sample_segment] + step * self.dx[self.sample_segment]
        sample_y = self.ay[self.sample_segment] + step * self.dy[self.sample_segment]
        self.kdtree = cKDTree(np.column_stack((sample_x, sample_y)))

    def nearest(
        self, x: FloatArray, y: FloatArray, max_distance_m: float
    ) -> tuple[IntArray, IntArray]:
        """Return (row, segment) for each point with a segment within ``max_distance_m``.

        The segment is the nearest one, and the lowest-numbered among
        equally near ones, exactly as a search over all segments would give.
        """
        samples = len(self.sample_segment)
        k = min(CANDIDATE_SAMPLES, samples)
        slack_m = SAMPLE_SPACING_M / 2
        sample_m, sample = self.kdtree.query(
            np.column_stack((x, y)), k=k, distance_upper_bound=max_distance_m + slack_m
        )
        sample_m, sample = sample_m.reshape(len(x), k), sample.reshape(len(x), k)
        found = sample < samples
        segments = self.sample_segment[np.minimum(sample, samples - 1)]
        _, distance = self.project(segments, x[:, np.newaxis], y[:, np.newaxis])
        distance = np.where(found, distance, np.inf)

        # best candidate per row: smallest distance, then smallest segment
        best_m = distance.min(axis=1)
        tied = distance == best_m[:, np.newaxis]
        best_segment = np.where(tied, segments, len(self.edge)).min(axis=1)

        # with all k neighbours inside the bound, a closer segment could
        # hide beyond them: search those rows exhaustively, within the best
        # distance found so far
        radius_m = np.minimum(best_m, max_distance_m)
        unproven = found[:, -1] & (sample_m[:, -1] <= radius_m + slack_m)
        if unproven.any():
            best_segment[unproven], best_m[unproven] = self._nearest_exhaustive(
                x[unproven], y[unproven], radius_m[unproven] + TIE_MARGIN_M
            )
        hit = best_m <= max_distance_m
        return np.flatnonzero(hit), best_segment[hit]

    def nearest_one(
        self, x: float, y: float, max_distance_m: float
    ) -> tuple[int, float] | None:
        """Scalar form of `nearest`: (segment, distance) or None, with the same result."""
        samples = len(self.sample_segment)
        k = min(CANDIDATE_SAMPLES_ONE, samples)
        slack_m = SAMPLE_SPACING_M / 2
        sample_m, sample = self.kdtree.query(
            (x, y), k=k, distance_upper_bound=max_distance_m + slack_m
        )
        sample_m = np.atleast_1d(sample_m).tolist()
        sample = np.atleast_1d(sample).tolist()
        best: tuple[float, int] = (math.inf, -1)
        for found in sample:
            if found < samples:
                segment = int(self.sample_segment[found])
                best = min(best, (self.project_one(segment, x, y)[1], segment))
        radius_m = min(best[0], max_distance_m)
        if sample[-1] < samples and sample_m[-1] <= radius_m + slack_m:
            best = (math.inf, -1)
            for segment in self.tree.query(
                shapely.Point(x, y),
                predicate="dwithin",
                distance=radius_m + TIE_MARGIN_M,
            ):
                best = min(
                    best, (self.project_one(int(segment), x, y)[1], int(segment))
                )
        if best[0] > max_distance_m:
            return None
        return best[1], best[0]

    def _nearest_exhaustive(
        self, x: FloatArray, y: FloatArray, radius_m: FloatArray
    ) -> tuple[IntArray, FloatArray]:
        pairs = self.tree.query(
            shapely.points(x, y), predicate="dwithin", distance=radius_m
        )
        segment = np.zeros(len(x), dtype=np.int64)
        best_m = np.full(len(x), np.inf)
        if pairs.shape[1]:
            _, distance = self.project(pairs[1], x[pairs[0]], y[pairs[0]])
            order = np.lexsort((pairs[1], distance, pairs[0]))
            inputs = pairs[0][order]
            first = np.concatenate(([True], inputs[1:] != inputs[:-1]))
            segment[inputs[first]] = pairs[1][order][first]
            best_m[inputs[first]] = distance[order][first]
        return segment, best_m

    def __len__(self) -> int:
        return int(self.edge.shape[0])

    def project(
        self, segments: IntArray, x: FloatArray, y: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Return the clamped position 0..1 along each segment and the distance to it."""
        length2 = self.length2[segments]
        dx, dy = self.dx[segments], self.dy[segments]
        ax, ay = self.ax[segments], self.ay[segments]
        dot = (x - ax) * dx + (y - ay) * dy
        t = np.minimum(np.maximum(dot / np.where(length2 > 0, length2, 1.0), 0.0), 1.0)
        t = np.where(length2 > 0, t, 0.0)
        off_x = x - (ax + t * dx)
        off_y = y - (ay + t * dy)
        return t, np.sqrt(off_x * off_x + off_y * off_y)

    @cached_property
    def _segment_rows(self) -> list[tuple[float, float, float, float, float]]:
        # Python floats per segment: the scalar path avoids numpy scalars
        return list(
            zip(
                *(
                    a.tolist()
                    for a in (self.ax, self.ay, self.dx, self.dy, self.length2)
                ),
                strict=True,
            )
        )

    def project_one(self, segment: int, x: float, y: float) -> tuple[float, float]:
        """Scalar form of `project`, with the same floating-point operations."""
        ax, ay, dx, dy, length2 = self._segment_rows[segment]
        t = (
            min(max(((x - ax) * dx + (y - ay) * dy) / length2, 0.0), 1.0)
            if length2 > 0
            else 0.0
        )
        off_x = x - (ax + t * dx)
        off_y = y - (ay + t * dy)
        return t, math.sqrt(off_x * off_x + off_y * off_y)
