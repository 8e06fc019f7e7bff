"""Road graphs, snapping, exact travel times and arrival windows.

A pure core: values in, values out, with no Redis, sockets or web framework
inside. Coordinates are (lat, lon) in degrees in every public signature.

- `eta.build`: build road graphs from OSM data with osmnx, and cache them.
- `eta.graph`: `RoadGraph`, the compiled array form of a road graph.
- `eta.speeds`: ``maxspeed`` parsing and default speeds per highway type.
- `eta.snap`: snap pings to the nearest drivable edge.
- `eta.routing`: per-destination travel-time trees, routes and node paths.
- `eta.windows`: arrival windows, their error model and smoothing.
- `eta.errors`: the package's exception tree.
"""
