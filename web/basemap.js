// Base map shared by the customer and dispatcher pages.
//
// Raster tiles come from the server's configured tile URL. When no tile has
// loaded after a tile error, or within TILE_WAIT_MS, the page draws the
// streets of the server's road graph instead, so the map stays readable
// without internet access. document.body.dataset.basemap names the state:
// "tiles-loading", "tiles", "streets-loading", "streets" or "blank" (both failed).

const ATTRIBUTION = "© OpenStreetMap contributors";
const TILE_WAIT_MS = 3000;
const STREETS_PANE = "streets";
const STREET_STYLE = { color: "#8c8c8c", weight: 1, opacity: 0.9 };

/** Fetch the page settings: {tile_url, graph_bounds: [south, west, north, east] | null}. */
export async function fetchConfig() {
  const response = await fetch("/v1/config");
  if (!response.ok) {
    throw new Error(`GET /v1/config failed with HTTP ${response.status}`);
  }
  return response.json();
}

/** Create a Leaflet map in `element`, framed on the road graph's bounds. */
export function createBaseMap(element, config) {
  const map = L.map(element, { zoomControl: true, preferCanvas: false });
  const pane = map.createPane(STREETS_PANE);
  pane.style.zIndex = "250"; // above tiles (200), below overlays (400)
  pane.style.pointerEvents = "none";

  const bounds = config.graph_bounds;
  if (Array.isArray(bounds) && bounds.length === 4) {
    map.fitBounds([
      [bounds[0], bounds[1]],
      [bounds[2], bounds[3]],
    ]);
  } else {
    map.setView([0, 0], 2);
  }
  addTilesWithFallback(map, config.tile_url);
  return map;
}

function addTilesWithFallback(map, tileUrl) {
  document.body.dataset.basemap = "tiles-loading";
  if (!tileUrl) {
    drawStreets(map);
    return;
  }
  const tiles = L.tileLayer(tileUrl, { attribution: ATTRIBUTION, maxZoom: 19 });
  let loadedTiles = 0;
  let fellBack = false;

  const fallBack = () => {
    if (fellBack || loadedTiles > 0) {
      return;
    }
    fellBack = true;
    clearTimeout(timer);
    // Failing tile requests would repeat on every pan and zoom.
    map.removeLayer(tiles);
    drawStreets(map);
  };
  tiles.on("tileload", () => {
    loadedTiles += 1;
    document.body.dataset.basemap = "tiles";
  });
  tiles.on("tileerror", fallBack);
  const timer = setTimeout(fallBack, TILE_WAIT_MS);
  tiles.addTo(map);
}

async function drawStreets(map) {
  document.body.dataset.basemap = "streets-loading";
  let geojson;
  try {
    const response = await fetch("/v1/graph/streets");
    if (!response.ok) {
      throw new Error(`GET /v1/graph/streets failed with HTTP ${response.status}`);
    }
    geojson = await response.json();
  } catch (error) {
    console.warn("map tiles and street fallback both unavailable:", error);
    document.body.dataset.basemap = "blank";
    return;
  }
  const streets = L.geoJSON(geojson, {
    pane: STREETS_PANE,
    style: STREET_STYLE,
    interactive: false,
    attribution: ATTRIBUTION,
    // One canvas instead of an SVG element for each of the many street lines.
    renderer: L.canvas({ pane: STREETS_PANE }),
  });
  streets.addTo(map);
  document.body.dataset.basemap = "streets";
}
