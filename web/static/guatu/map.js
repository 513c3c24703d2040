/* guatu 挂图: layers fetched by bounding box or as vector tiles, styled and filtered as each
   layer declares (the options built from its declaration by web/maps.py), popups built as text. */
(function () {
  "use strict";

  var status = {};      // layer id -> status line
  var statusBox = null;
  var loaders = [];     // every layer group, to tell when all are loaded
  var layers = {};      // layer id -> its options (the declaration as the page reads it)
  var refilter = {};    // layer id -> function(query): draw only what the map's filter keeps
  var drawnBy = {};     // layer id -> function(): properties of the features drawn now (tests, screenshots)
  var unitsBy = {};     // unit layer id -> function(): its Leaflet layers drawn now (for the unit labels)
  var reloaders = {};   // layer id -> function(): fetch what is drawn again (after an edit)
  var groups = {};      // layer id -> its layer group on the map
  var popupHooks = [];  // function(opts, feature, box): what other modules add to a popup (edit buttons)
  var paints = [];      // function(opts, props, style): another colouring of a layer (contracts.js), or null
  var tileHits = [];    // per tiled layer, top one first: {z (its pane's), hit(mapEvent) -> props|null, open}
  var pointsOf = {};    // tiled layer id -> function(id): a page point inside that feature as drawn (tests)
  var stylesOf = {};    // tiled layer id -> function(id): the style that feature is drawn with now (tests)
  var restylers = {};   // layer id -> function(): draw what is shown again with look() (after a paint changed)
  var levels = [];      // the hierarchy (layers.hierarchy.describe()): id, zh, en, digits, names
  /* A phone: panels start folded. Asked when the map is built, not when this script is read: the page's
     viewport meta comes later in its head, and until it is read a phone lays the page out 980 px wide. */
  function narrow() { return window.matchMedia("(max-width: 640px)").matches; }
  var mapQuery = "";    // the print's filters (narrow_<layer>=…): the print button prints what is shown
  var shownFilter = null;  // the filter panel's layer and query (panel), for the docked ledger
  var HIGHLIGHT = {weight: 4, color: "#f59e0b", dashArray: null};  // the feature whose ledger is open
  var POPUP = {maxWidth: 360, autoPanPaddingTopLeft: [60, 150], autoPanPaddingBottomRight: [40, 40]};

  var el = guatuDom.el;

  /* A value as a popup shows it: personal data comes masked from the server; a code with its name. */
  function formatValue(field, value) {
    if (value === null || value === undefined || value === "") return "—";
    if (field.decimals !== null && field.decimals !== undefined) return Number(value).toFixed(field.decimals);
    if (field.labels && Object.prototype.hasOwnProperty.call(field.labels, value)) return value + " " + field.labels[value];
    return String(value);
  }

  function popupNode(opts, feature) {
    var box = el("div", "guatu-popup");
    var props = feature.properties || {};
    box.appendChild(el("div", "guatu-popup-title", opts.title.zh + " " + opts.title.en));
    var table = el("table", "guatu-popup-table");
    opts.popup.forEach(function (field) {
      var value = props[field.name];
      if (value === null || value === undefined || value === "") return;  // keep popups short
      var row = el("tr");
      var th = el("th", null, field.zh);
      th.title = field.en;
      row.appendChild(th);
      row.appendChild(el("td", "guatu-v-" + field.name, formatValue(field, value)));
      table.appendChild(row);
    });
    box.appendChild(table);
    var extra = feature.extra;  // other attributes a file brought (其他属性): its own names, shown as text
    if (extra && typeof extra === "object" && Object.keys(extra).length) {
      box.appendChild(el("div", "guatu-popup-extra", "其他属性 Other attributes"));
      var more = el("table", "guatu-popup-table guatu-popup-extra-table");
      Object.keys(extra).forEach(function (name) {
        var row = el("tr");
        row.appendChild(el("th", null, name));
        row.appendChild(el("td", null, String(extra[name])));
        more.appendChild(row);
      });
      box.appendChild(more);
    }
    popupHooks.forEach(function (hook) { hook(opts, feature, box); });
    return box;
  }

  /* How a feature of a layer is drawn, from the layer's style: the one rule for GeoJSON and tiles. */
  function look(opts, props) {
    var style = opts.style;
    props = props || {};
    var colour = style.by && Object.prototype.hasOwnProperty.call(style.colors, props[style.by])
      ? style.colors[props[style.by]] : style.default;
    var loud = Boolean(style.emphasis) && props[style.by] === style.emphasis;
    var drawn = {
      // Filled shapes get a neutral outline; outlines-only layers (grids) show their colour.
      color: loud || !style.fill || style.fillOpacity < 0.2 ? colour : "#374151",
      weight: loud ? Math.max(2, style.weight * 2.5) : style.weight,
      fillColor: colour,
      fillOpacity: style.fill ? (loud ? Math.min(0.85, style.fillOpacity + 0.3) : style.fillOpacity) : 0,
      fill: style.fill, dashArray: style.dash, radius: style.radius,
      className: "guatu-f guatu-" + opts.id + " guatu-" + opts.id + "-" + props.id + (loud ? " guatu-emphasis" : "")
    };
    paints.forEach(function (paint) { drawn = paint(opts, props, drawn) || drawn; });
    return drawn;
  }

  function showStatus() {
    if (!statusBox) return;
    statusBox.textContent = "";
    Object.keys(status).sort().forEach(function (id) {
      statusBox.appendChild(el("div", "guatu-status-" + id, status[id]));
    });
  }

  function zoomHint(opts) {
    return opts.title.zh + "：请放大到 " + opts.style.minZoom + " 级查看 (zoom in to see " + opts.title.en + ")";
  }

  function pane(map, opts) {
    var name = "guatu-" + opts.id;
    if (!map.getPane(name)) map.createPane(name).style.zIndex = String(400 + opts.order);
    return name;
  }

  /* Open the ledger of feature ID of layer OPTS at LATLNG (a click, a search hit). */
  function openLedger(map, opts, id, latlng, popup, onOpen) {
    popup = popup || L.popup(L.extend({autoPan: false}, POPUP));
    popup.setLatLng(latlng).setContent(el("div", "guatu-popup", "加载中… loading")).openOn(map);
    return fetch(opts.url + "/" + id, {headers: {Accept: "application/geo+json"}})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (feature) {
        if (!onOpen || onOpen()) popup.setContent(popupNode(opts, feature));
        return feature;
      })
      .catch(function (err) {
        if (!onOpen || onOpen()) popup.setContent(el("div", "guatu-bad", "读取失败 failed: " + err.message));
      });
  }

  function bboxLayer(group, map, opts) {
    layers[opts.id] = opts;
    groups[opts.id] = group;
    var paneName = pane(map, opts);
    var style = opts.style;
    var query = "";   // the map's filter of this layer
    var shown = {};  // feature id -> {layer, stamp}: kept across refreshes so open popups stay open
    var lastAdded = null;
    var geo = L.geoJSON(null, {
      pane: paneName,
      style: function (feature) { return look(opts, L.extend({id: feature.id}, feature.properties)); },
      pointToLayer: function (feature, latlng) {
        return L.circleMarker(latlng, {pane: paneName, radius: style.radius});
      },
      onEachFeature: function (feature, layer) {
        layer.bindPopup(function () { return popupNode(opts, feature); }, POPUP);
        if (layer.setStyle) {  // highlight the feature whose ledger is open
          layer.on("popupopen", function () { layer.setStyle(HIGHLIGHT); });
          layer.on("popupclose", function () { geo.resetStyle(layer); });
        }
        lastAdded = layer;
      }
    });
    geo.addTo(group);
    var seq = 0;
    var controller = null;

    /* Replace what is drawn with FC, touching only features that came, went or changed. */
    function update(fc) {
      var next = {};
      fc.features.forEach(function (feature) {
        var stamp = feature.properties && feature.properties.updated_at;
        var have = shown[feature.id];
        if (have && have.stamp === stamp) {
          next[feature.id] = have;
          return;
        }
        if (have) geo.removeLayer(have.layer);
        geo.addData(feature);
        next[feature.id] = {layer: lastAdded, stamp: stamp};
      });
      Object.keys(shown).forEach(function (id) {
        if (!next[id]) {
          if (shown[id].layer.isPopupOpen()) { next[id] = shown[id]; return; }
          geo.removeLayer(shown[id].layer);
        }
      });
      shown = next;
    }

    function clear() {
      geo.clearLayers();
      shown = {};
    }

    function refresh() {
      if (!map.hasLayer(group)) {
        group.loading = false;
        return;
      }
      if (map.getZoom() < style.minZoom) {
        clear();
        group.loading = false;
        status[opts.id] = zoomHint(opts);
        showStatus();
        group.fire("guatu:loaded", {count: 0});
        return;
      }
      var b = map.getBounds();
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(7); });
      var mine = ++seq;
      if (controller) controller.abort();
      controller = window.AbortController ? new AbortController() : null;
      status[opts.id] = opts.title.zh + "：加载中… (loading)";
      group.loading = true;
      showStatus();
      fetch(opts.url + "?bbox=" + bbox.join(",") + "&limit=" + opts.limit + (query ? "&" + query : ""),
            {signal: controller ? controller.signal : undefined, headers: {Accept: "application/geo+json"}})
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (fc) {
          if (mine !== seq) return;
          update(fc);
          var count = fc.numberReturned, total = fc.numberMatched;
          status[opts.id] = opts.title.zh + "：" + count + (count < total ? " / " + total + "（请放大 zoom in）" : "") + " 个";
          showStatus();
          group.loading = false;
          group.fire("guatu:loaded", {count: count});
        })
        .catch(function (err) {
          if (err && err.name === "AbortError") return;
          group.loading = false;
          status[opts.id] = opts.title.zh + "：加载失败 (failed) " + err.message;
          showStatus();
        });
    }

    map.on("moveend", refresh);
    restylers[opts.id] = function () {
      Object.keys(shown).forEach(function (id) { if (!shown[id].layer.isPopupOpen()) geo.resetStyle(shown[id].layer); });
    };
    drawnBy[opts.id] = function () {
      return map.hasLayer(group) ? Object.keys(shown).map(function (id) { return shown[id].layer.feature.properties; }) : [];
    };
    if (opts.units) {
      unitsBy[opts.id] = function () {
        return map.hasLayer(group) ? Object.keys(shown).map(function (id) { return shown[id].layer; }) : [];
      };
      group.on("guatu:loaded remove", function () { map.fire("guatu:units"); });
    }
    refilter[opts.id] = function (q) {
      if (q === query) return;
      query = q;
      refresh();
    };
    reloaders[opts.id] = function () {
      map.closePopup();
      clear();
      refresh();
    };
    group.on("add", refresh);
    group.on("remove", function () { delete status[opts.id]; showStatus(); });
    loaders.push(group);
    refresh();
  }

  /* A big layer drawn from vector tiles (/tiles/{layer}/{z}/{x}/{y}.pbf): only the tiles in view
     are fetched, each holding id, code, name and the styled field; a click fetches the full
     ledger for the popup. The map's filter narrows the tiles on the server (same query string
     as the statistics), so what is drawn is what is counted. */
  function tileLayer(group, map, opts) {
    layers[opts.id] = opts;
    groups[opts.id] = group;
    var paneName = pane(map, opts);
    var style = opts.style;
    var query = "";

    // Tiles give each feature an MVT id; styling and popups need it among the properties.
    // A filter change aborts the tiles still coming for the old one, and any that arrive all
    // the same are drawn empty: they must not mark the new tiles loaded or keep their paths.
    var Tiles = L.VectorGrid.Protobuf.extend({
      _generation: 0,
      _getVectorTilePromise: function (coords) {
        var self = this, generation = this._generation;
        return L.VectorGrid.Protobuf.prototype._getVectorTilePromise.call(this, coords).then(function (tile) {
          if (generation !== self._generation) return {layers: {}};
          Object.keys(tile.layers).forEach(function (name) {
            tile.layers[name].features.forEach(function (f) { f.properties.id = f.id; });
          });
          return tile;
        }).catch(function (err) {  // a tile that failed is drawn empty and said, not left loading
          if (err && err.name !== "AbortError" && generation === self._generation) {
            status[opts.id + "~"] = opts.title.zh + "：瓦片加载失败 (tile failed) " + err.message;
            showStatus();
          }
          return {layers: {}};
        });
      },
      setUrl: function (url, noRedraw) {
        this._generation += 1;
        if (this._aborter) this._aborter.abort();
        this._aborter = window.AbortController ? new AbortController() : null;
        this.options.fetchOptions = {credentials: "same-origin", signal: this._aborter ? this._aborter.signal : undefined};
        return L.VectorGrid.Protobuf.prototype.setUrl.call(this, url, noRedraw);
      }
    });
    var styles = {};
    styles[opts.id] = function (props) { return look(opts, props); };
    var tiles = new Tiles(opts.tiles, {
      pane: paneName,
      // One canvas per tile, not an SVG element per feature: a z15 view holds ~12,000 parcels
      // (bench/map_page.py, issue 15). Clicks are hit-tested here (catchClicks, hit).
      rendererFactory: L.canvas.tile,
      vectorTileLayerStyles: styles,
      // Not interactive itself: each tile's canvas would catch the clicks meant for the tiled layers
      // below it (an empty tile covers its whole square). A click on the map is hit-tested against
      // the tiled layers from the top one down (tileHits). No minZoom here: Leaflet would stop the
      // whole map zooming out below it.
      interactive: false,
      maxZoom: 22,
      getFeatureId: function (f) { return f.id; },
      fetchOptions: {credentials: "same-origin"}
    });
    /* Below the layer's zoom the tiles are taken off the map (nothing fetched, nothing drawn). */
    function fit() {
      var want = map.getZoom() >= style.minZoom;
      if (want && !group.hasLayer(tiles)) group.addLayer(tiles);
      if (!want && group.hasLayer(tiles)) group.removeLayer(tiles);
    }
    fit();

    var popup = L.popup(POPUP);
    var lit = null;
    /* VectorGrid works out a feature's pixel bounds only for interactive layers: here when first asked. */
    function bounded(f) {
      if (!f._pxBounds && f.makeInteractive) f.makeInteractive();
      return Boolean(f._pxBounds);
    }
    /* Whether tile pixel P is inside polygon feature F's rings (not merely near its outline, as
       Leaflet's own test says, which would open a neighbour's ledger from next to the edge). */
    function inside(f, p) {
      var parts = f._parts || [], within = false;
      if (!(f instanceof L.Polygon)) return false;
      for (var r = 0; r < parts.length; r++) {
        var ring = parts[r];
        for (var a = 0, b = ring.length - 1; a < ring.length; b = a++) {
          if ((ring[a].y > p.y) !== (ring[b].y > p.y) &&
              p.x < (ring[b].x - ring[a].x) * (p.y - ring[a].y) / (ring[b].y - ring[a].y) + ring[a].x) within = !within;
        }
      }
      return within;
    }
    /* The feature drawn at map event E (its properties), or null. */
    function hit(e) {
      if (!map.hasLayer(tiles)) return null;
      var keys = Object.keys(tiles._vectorTiles), near = null;
      for (var i = 0; i < keys.length; i++) {
        var tile = tiles._vectorTiles[keys[i]];
        if (!tile._map) continue;
        var p = e.layerPoint.subtract(tile.getOffset());
        for (var o = tile._drawLast; o; o = o.prev) {  // the canvas's drawing order: the last one is on top
          var f = o.layer;
          if (!f.properties || !bounded(f) || !f._pxBounds.contains(p)) continue;
          if (inside(f, p)) return f.properties;
          if (!near && f._containsPoint(p)) near = f.properties;  // on its outline (a line, a point)
        }
      }
      return near;
    }
    tileHits.push({z: 400 + opts.order, hit: hit, open: function (props, e) {
      pick({layer: {properties: props}, latlng: e.latlng});
    }});
    tileHits.sort(function (a, b) { return b.z - a.z; });
    if (tileHits.length === 1) catchClicks(map);
    function pick(e) {
      var id = e.layer.properties.id;
      if (lit !== null) tiles.resetFeatureStyle(lit);
      lit = id;
      tiles.setFeatureStyle(id, L.extend(look(opts, e.layer.properties), HIGHLIGHT));
      openLedger(map, opts, id, e.latlng, popup, function () { return lit === id; });
    }
    map.on("popupclose", function (e) {
      if (e.popup === popup && lit !== null) { tiles.resetFeatureStyle(lit); lit = null; }
    });

    function say() {
      if (!map.hasLayer(group)) { delete status[opts.id]; showStatus(); return; }
      status[opts.id] = map.getZoom() < style.minZoom
        ? zoomHint(opts)
        : opts.title.zh + "：矢量瓦片 " + (group.loading ? "加载中… (loading)" : drawn().length + " 个 (vector tiles)");
      showStatus();
    }
    // Loading is read off the tiles themselves: GridLayer's own loading/load events can be
    // skipped when tiles are pruned mid-load (a zoom out and back in).
    function settle() {
      group.loading = map.hasLayer(group) && map.getZoom() >= style.minZoom && !tiles._noTilesToLoad();
      say();
      if (!group.loading) group.fire("guatu:loaded");
    }
    tiles.on("tileloadstart", function () { group.loading = true; say(); });
    tiles.on("tileload tileunload tileerror load", settle);
    map.on("zoomend", function () { fit(); settle(); });
    group.on("add", settle);
    group.on("remove", function () { map.closePopup(popup); group.loading = false; say(); });

    /* The properties of the features drawn now, once each (a feature crossing tiles is in both). */
    function drawn() {
      if (!map.hasLayer(group) || map.getZoom() < style.minZoom) return [];
      var seen = {}, out = [];
      Object.keys(tiles._vectorTiles).forEach(function (key) {
        var features = tiles._vectorTiles[key]._features || {};
        Object.keys(features).forEach(function (id) {
          if (seen[id]) return;
          seen[id] = true;
          out.push(features[id].feature.properties);
        });
      });
      return out;
    }
    drawnBy[opts.id] = drawn;
    /* Where feature ID is drawn: a point inside it on the page (tests click there), and its style. */
    function drawnFeature(id) {
      var keys = Object.keys(tiles._vectorTiles);
      for (var i = 0; i < keys.length; i++) {
        var tile = tiles._vectorTiles[keys[i]], found = (tile._features || {})[id];
        if (found) return {tile: tile, feature: found.feature};
      }
      return null;
    }
    function under(x, y) {  // a click there reaches this layer: nothing above it (popup, control, marker)
      var top = document.elementFromPoint(x, y);
      return Boolean(top) && map.getContainer().contains(top) && paneZ(top) < 400 + opts.order;
    }
    function ours(x, y, id) {  // a click there opens feature ID (not one drawn over it)
      var props = hit({layerPoint: map.mouseEventToLayerPoint({clientX: x, clientY: y})});
      return Boolean(props) && String(props.id) === String(id);
    }
    pointsOf[opts.id] = function (id) {
      var frame = map.getContainer().getBoundingClientRect(), best = null;
      Object.keys(tiles._vectorTiles).forEach(function (key) {
        var tile = tiles._vectorTiles[key], found = (tile._features || {})[id];
        if (best || !found || !bounded(found.feature) || !tile._container) return;
        var f = found.feature, b = f._pxBounds, rect = tile._container.getBoundingClientRect();
        var steps = [5, 4, 6, 3, 7, 2, 8, 1, 9];  // from the middle out: away from the neighbours
        for (var i = 0; i < steps.length && !best; i++) {
          for (var j = 0; j < steps.length && !best; j++) {
            var p = L.point(b.min.x + (b.max.x - b.min.x) * steps[i] / 10, b.min.y + (b.max.y - b.min.y) * steps[j] / 10);
            var x = rect.left + p.x, y = rect.top + p.y;
            if (inside(f, p) && x > frame.left + 5 && x < frame.right - 5 && y > frame.top + 5 &&
                y < frame.bottom - 5 && under(x, y) && ours(x, y, id)) best = {x: x, y: y};
          }
        }
      });
      return best;
    };
    stylesOf[opts.id] = function (id) {
      var found = drawnFeature(id);
      return found ? L.extend({}, found.feature.options) : null;
    };
    restylers[opts.id] = function () {  // VectorGrid's per-feature style: each feature drawn now, as look() says
      drawn().forEach(function (props) { if (props.id !== lit) tiles.setFeatureStyle(props.id, look(opts, props)); });
    };
    /* After an edit: every tile again, past the browser's cache (tiles may be kept a minute). */
    reloaders[opts.id] = function () {
      map.closePopup(popup);
      tiles.options.fetchOptions = L.extend({}, tiles.options.fetchOptions, {cache: "no-cache"});
      if (map.hasLayer(tiles)) tiles.redraw();
    };
    refilter[opts.id] = function (q) {
      if (q === query) return;
      query = q;
      map.closePopup(popup);  // its feature may be filtered out
      delete status[opts.id + "~"];
      var visible = map.hasLayer(group) && map.getZoom() >= style.minZoom;
      tiles.setUrl(opts.tiles + (q ? "?" + q : ""), !visible);  // hidden: the next view fetches
      settle();
    };
    loaders.push(group);
  }

  /* The z-index of the map pane NODE is drawn in: 0 for the map itself, above all for anything
     that is not drawn on the map (controls, panels, the editor's forms). */
  function paneZ(node) {
    if (node.classList && node.classList.contains("leaflet-container")) return 0;
    if (!node.closest(".leaflet-map-pane")) return Infinity;
    var pane = node.closest(".leaflet-pane:not(.leaflet-map-pane)");
    return pane ? Number(window.getComputedStyle(pane).zIndex) || 0 : 0;
  }

  /* Tiled layers paint their features on canvases that take no clicks (an empty tile would hide
     the layers below it). A click on the map is offered to them first, the top one first, before
     Leaflet hands it to whatever is under the mouse in a lower pane (a grid's SVG outline). */
  function catchClicks(map) {
    map.getContainer().addEventListener("click", function (ev) {
      if (map.dragging && map.dragging.moved()) return;
      if (map.pm && map.pm.globalDrawModeEnabled && map.pm.globalDrawModeEnabled()) return;
      var below = paneZ(ev.target);
      var e = {layerPoint: map.mouseEventToLayerPoint(ev), latlng: map.mouseEventToLatLng(ev)};
      for (var i = 0; i < tileHits.length; i++) {
        if (tileHits[i].z <= below) return;
        var props = tileHits[i].hit(e);
        if (props) {
          ev.stopPropagation();
          tileHits[i].open(props, e);
          return;
        }
      }
    }, true);
  }

  /* "#zoom/lat/lon" in the address (as the checks page links to a finding): open the map there. */
  function goToHash(map) {
    var m = /^#(\d{1,2})\/(-?\d{1,3}(?:\.\d+)?)\/(-?\d{1,3}(?:\.\d+)?)$/.exec(window.location.hash);
    if (!m || Math.abs(Number(m[2])) > 90 || Math.abs(Number(m[3])) > 180) return;
    map.setView([Number(m[2]), Number(m[3])], Math.min(Number(m[1]), map.getMaxZoom()));
  }

  /* Labels of the units drawn (streets, communities, grids), one level at a time: the narrowest
     whose units are wide enough on screen to carry their name, and none over another. */
  function unitLabels(map) {
    var group = L.layerGroup();
    var name = "guatu-unit-labels";
    if (!map.getPane(name)) {
      var node = map.createPane(name);
      node.style.zIndex = "640";
      node.style.pointerEvents = "none";
    }
    group.addTo(map);
    var timer = null;
    var MIN_WIDTH = 110;  // px: a unit narrower than this on screen is not labelled at its level

    function depth(level) {
      for (var i = 0; i < levels.length; i++) if (levels[i].id === level) return i;
      return -1;
    }

    function candidates() {
      var view = map.getBounds(), out = [];
      Object.keys(unitsBy).forEach(function (layerId) {
        var opts = layers[layerId], units = opts.units;
        unitsBy[layerId]().forEach(function (layer) {
          var props = layer.feature.properties || {};
          var level = units.levelField ? units.levelOf[props[units.levelField]] : units.levels[0];
          if (!level || !layer.getBounds) return;
          var b = layer.getBounds();
          if (!view.intersects(b)) return;
          var sw = map.latLngToContainerPoint(b.getSouthWest()), ne = map.latLngToContainerPoint(b.getNorthEast());
          var inside = L.latLngBounds(
            [Math.max(b.getSouth(), view.getSouth()), Math.max(b.getWest(), view.getWest())],
            [Math.min(b.getNorth(), view.getNorth()), Math.min(b.getEast(), view.getEast())]);
          var at = view.contains(b) && layer.getCenter ? layer.getCenter() : inside.getCenter();
          out.push({level: level, width: Math.abs(ne.x - sw.x), at: at,
                    text: props[units.nameField] || props[opts.key], code: props[opts.key]});
        });
      });
      return out;
    }

    function draw() {
      timer = null;
      group.clearLayers();
      var all = candidates();
      var byLevel = {};
      all.forEach(function (c) { (byLevel[c.level] = byLevel[c.level] || []).push(c); });
      var present = Object.keys(byLevel).sort(function (a, b) { return depth(a) - depth(b); });
      if (!present.length) return;
      // the narrowest level whose typical unit is wide enough; else the widest there is
      var chosen = present[0];
      present.forEach(function (level) {
        var widths = byLevel[level].map(function (c) { return c.width; }).sort(function (a, b) { return a - b; });
        if (widths[Math.floor(widths.length / 2)] >= MIN_WIDTH) chosen = level;
      });
      var placed = [];
      byLevel[chosen].sort(function (a, b) { return b.width - a.width; }).forEach(function (c) {
        var p = map.latLngToContainerPoint(c.at);
        var w = 13 * String(c.text).length + 12, h = 20;
        var box = {x0: p.x - w / 2, y0: p.y - h / 2, x1: p.x + w / 2, y1: p.y + h / 2};
        var clash = placed.some(function (o) { return box.x0 < o.x1 && o.x0 < box.x1 && box.y0 < o.y1 && o.y0 < box.y1; });
        if (clash) return;
        placed.push(box);
        var text = el("span", "guatu-unit-text", c.text);
        text.title = c.code;
        L.marker(c.at, {
          pane: name, interactive: false, keyboard: false,
          icon: L.divIcon({className: "guatu-unit-label guatu-unit-label-" + chosen, html: text, iconSize: null})
        }).addTo(group);
      });
    }
    function later() { if (timer === null) timer = setTimeout(draw, 50); }
    map.on("guatu:units moveend", later);
  }

  function chrome(map, opts) {
    goToHash(map);
    window.addEventListener("hashchange", function () { goToHash(map); });
    levels = opts.levels;
    unitLabels(map);
    if (narrow()) {  // a phone: the layer switcher is a button until tapped, folded again by a tap on the map
      var switcher = map.getContainer().querySelector(".leaflet-control-layers");
      var fold = function () { if (switcher) switcher.classList.remove("leaflet-control-layers-expanded"); };
      setTimeout(fold, 0);
      map.on("click", fold);
    }
    var Box = L.Control.extend({
      options: {position: "topleft"},
      onAdd: function () {
        var box = el("div", "guatu-title");
        box.appendChild(el("div", "guatu-title-main", opts.title));
        var sub = el("div", "guatu-title-sub", "挂图作战 · 集体资源一张图 (guatu) · ");
        var link = el("a", "guatu-link", "上传数据 Upload");
        link.href = "/upload";
        sub.appendChild(link);
        sub.appendChild(document.createTextNode(" · "));
        var checks = el("a", "guatu-link", "边界检查 Checks");
        checks.href = "/checks";
        sub.appendChild(checks);
        sub.appendChild(document.createTextNode(" · "));
        [["/problems", "问题 Problems"], ["/contracts", "合同 Contracts"]].forEach(function (l) {
          var a = el("a", "guatu-link", l[1]);
          a.href = l[0];
          sub.appendChild(a);
          sub.appendChild(document.createTextNode(" · "));
        });
        var print = el("a", "guatu-link guatu-print", "打印挂图 Print");
        var printing = el("span", "guatu-print-status");
        var size = el("select", "guatu-print-size");
        size.title = "纸张 paper";
        [["A3", "A3 PDF"], ["A4", "A4 PDF"], ["A1", "A1 PDF"], ["A0", "A0 PDF"], ["A0/A4", "A0 → A4 分幅 sheets"],
         ["A3/png", "A3 PNG"]].forEach(function (choice) {
          var option = el("option", null, choice[1]);
          option.value = choice[0];
          size.appendChild(option);
        });
        var ratio = el("select", "guatu-print-scale");
        ratio.title = "比例尺 scale";
        [["", "比例尺 自动 auto"], ["1000", "1:1 000"], ["2000", "1:2 000"], ["5000", "1:5 000"],
         ["10000", "1:10 000"]].forEach(function (choice) {
          var option = el("option", null, choice[1]);
          option.value = choice[0];
          ratio.appendChild(option);
        });
        var withFigures = el("label", "guatu-print-figures");
        var figuresBox = el("input");
        figuresBox.type = "checkbox";
        withFigures.appendChild(figuresBox);
        withFigures.appendChild(document.createTextNode("附统计表 figures"));
        withFigures.title = "在图旁附统计表、各单元进度和待办问题 (tables beside the map)";
        function aim() {  // the wall map of what is on screen, on the chosen paper
          var b = map.getBounds();
          var parts = size.value.split("/");
          var extra = parts[1] === "png" ? "&format=png" : "&format=pdf" + (parts[1] ? "&sheets=" + parts[1] : "");
          if (ratio.value) extra += "&scale=" + ratio.value;
          if (figuresBox.checked) extra += "&figures=true";
          print.href = "/api/print?size=" + parts[0] + extra + "&bbox=" +
            [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",") +
            (mapQuery ? "&" + mapQuery : "");
          var shown = Object.keys(groups).filter(function (id) { return map.hasLayer(groups[id]); });
          excel.href = "/api/export.xlsx?layers=" + encodeURIComponent(shown.join(",")) +
            print.href.slice(print.href.indexOf("&bbox="));  // the same view and filters as the print
          aimFormats(shown, b);
        }
        /* The other formats, a layer at a time: each shown layer in the view, as filtered on the map. */
        var formats = el("details", "guatu-formats");
        formats.appendChild(el("summary", "guatu-link", "其他格式 ▾"));
        var formatList = el("div", "guatu-formats-list");
        var titles = {};
        (opts.legend || []).forEach(function (l) { titles[l.id] = l.title.zh; });
        formats.appendChild(formatList);
        var FORMATS = [["geojson", "", "GeoJSON"], ["csv", "", "CSV"], ["kml", "", "KML"], ["gpkg", "", "GPKG"],
                       ["shp.zip", "", "SHP"], ["shp.zip", "encoding=gbk", "SHP(GBK)"]];
        function aimFormats(shown, b) {
          formatList.textContent = "";
          var view = "bbox=" + [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) {
            return v.toFixed(6);
          }).join(",");
          var narrowing = new URLSearchParams(mapQuery);
          shown.forEach(function (id) {
            var row = el("div", "guatu-formats-row");
            row.appendChild(el("span", "guatu-formats-layer", (titles[id] || id) + "："));
            FORMATS.forEach(function (f) {
              var a = el("a", "guatu-link guatu-format", f[2]);
              a.href = "/api/layers/" + encodeURIComponent(id) + "/export." + f[0] + "?" +
                [f[1], view, narrowing.get("narrow_" + id) || ""].filter(Boolean).join("&");
              a.setAttribute("download", "");
              row.appendChild(a);
              row.appendChild(document.createTextNode(" "));
            });
            formatList.appendChild(row);
          });
          var qgis = el("a", "guatu-link guatu-format-qgis", "QGIS 工程 project (.qgz)");
          qgis.href = "/api/qgis/project.qgz";
          formatList.appendChild(qgis);
        }
        var excel = el("a", "guatu-link guatu-export", "导出 Excel");
        excel.title = "按当前视野和筛选导出所显示图层的台账 (export the ledgers shown, as filtered)";
        excel.setAttribute("download", "");
        map.on("moveend guatu:filter overlayadd overlayremove", aim);
        size.addEventListener("change", aim);
        ratio.addEventListener("change", aim);
        figuresBox.addEventListener("change", aim);
        aim();
        /* Drawn on the server in seconds (an A0 in tens): say so, then save the file; a busy
           server's answer (503, retry later) is shown here, not as a page of JSON. */
        print.addEventListener("click", function (event) {
          event.preventDefault();
          if (print.dataset.busy) return;
          print.dataset.busy = "1";
          printing.className = "guatu-print-status";
          printing.textContent = " 正在绘制挂图… (drawing)";
          fetch(print.href).then(function (r) {
            if (!r.ok) return r.json().then(function (e) { throw new Error(e.message || r.status); });
            var name = /filename\*=UTF-8''([^;]+)/.exec(r.headers.get("Content-Disposition") || "");
            return r.blob().then(function (blob) {
              var save = el("a");
              save.href = URL.createObjectURL(blob);
              save.download = name ? decodeURIComponent(name[1]) : "guatu-wall-map";
              document.body.appendChild(save);
              save.click();
              save.remove();
              setTimeout(function () { URL.revokeObjectURL(save.href); }, 60000);
              printing.textContent = " 已生成 (done)";
            });
          }).catch(function (err) {
            printing.className = "guatu-print-status guatu-bad";
            printing.textContent = " " + err.message;
          }).then(function () { delete print.dataset.busy; });
        });
        sub.appendChild(print);
        sub.appendChild(document.createTextNode(" "));
        sub.appendChild(size);
        sub.appendChild(document.createTextNode(" "));
        sub.appendChild(ratio);
        sub.appendChild(withFigures);
        sub.appendChild(printing);
        sub.appendChild(document.createTextNode(" · "));
        sub.appendChild(excel);
        sub.appendChild(document.createTextNode(" "));
        sub.appendChild(formats);
        box.appendChild(sub);
        L.DomEvent.disableClickPropagation(box);
        return box;
      }
    });
    new Box().addTo(map);

    var Legend = L.Control.extend({
      options: {position: "bottomright"},
      onAdd: function () {
        var box = el("div", "guatu-legend");
        var title = el("div", "guatu-legend-title", "图例 Legend ▾");
        title.title = "点击收起/展开 (click to fold)";
        title.addEventListener("click", function () {
          var folded = box.classList.toggle("guatu-folded");
          title.textContent = folded ? "图例 Legend ▸" : "图例 Legend ▾";
        });
        if (narrow()) title.click();  // a phone shows the map first; panels open on a tap
        box.appendChild(title);
        opts.legend.forEach(function (layer) {
          var section = el("div", "guatu-legend-layer");
          section.appendChild(el("div", "guatu-legend-name",
            layer.title.zh + " " + layer.title.en + (layer.by ? "（按" + layer.by + "）" : "")));
          layer.rows.forEach(function (row) {
            var line = el("div", "guatu-legend-row");
            var swatch = el("span", "guatu-swatch" + (layer.fill ? "" : " guatu-swatch-line"));
            swatch.style.borderColor = row.color;
            if (layer.fill) swatch.style.background = row.color;
            line.appendChild(swatch);
            line.appendChild(el("span", null, row.label));
            section.appendChild(line);
          });
          box.appendChild(section);
        });
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);
        return box;
      }
    });
    new Legend().addTo(map);

    var Status = L.Control.extend({
      options: {position: "bottomleft"},
      onAdd: function () {
        statusBox = el("div", "guatu-status");
        showStatus();
        return statusBox;
      }
    });
    new Status().addTo(map);
  }

  /* True once no layer is waiting for data (used by page tests and screenshots). */
  function idle() {
    return loaders.every(function (group) { return !group.loading; });
  }

  /* Keep panel BOX inside the map: between the top corner's controls (title, zoom) and its own
     bottom; scrolled inside when its content is longer. */
  function fitBelowTop(map, box) {
    var frame = map.getContainer().getBoundingClientRect();
    var corner = map.getContainer().querySelector(".leaflet-top.leaflet-left");
    var top = corner ? corner.getBoundingClientRect().bottom : frame.top;
    var bottom = box.getBoundingClientRect().bottom;
    var room = bottom - top - 10;
    if (narrow()) room = Math.min(room, frame.height * 0.45);  // a phone keeps half its map in sight
    box.style.maxHeight = Math.max(120, Math.floor(room)) + "px";
  }

  /* Bars per value of a counted field: count and share, in the map's colours where it is the styled field. */
  function valueChart(chart, rows, total, colors) {
    chart.textContent = "";
    var most = Math.max.apply(null, [1].concat(rows.map(function (r) { return r.count; })));
    rows.forEach(function (row) {
      var line = el("div", "guatu-bar");
      var value = row.value === null ? "" : row.value;
      line.dataset.value = value;
      line.dataset.count = String(row.count);
      var label = el("span", "guatu-bar-label", value === "" ? "未填 blank" : value);
      if (row.label) label.title = row.label;
      line.appendChild(label);
      var track = el("span", "guatu-bar-track");
      var fill = el("span", "guatu-bar-fill");
      fill.style.width = (100 * row.count / most).toFixed(1) + "%";
      fill.style.background = (colors && colors[value]) || "#6b7280";
      track.appendChild(fill);
      line.appendChild(track);
      line.appendChild(el("span", "guatu-bar-value", row.count + "（" +
        (total ? (100 * row.count / total).toFixed(0) : 0) + "%）"));
      chart.appendChild(line);
    });
  }

  /* The declared figures of a total or a roll-up row (闲置 12（3.4%）；已盘活 5). */
  function figuresText(filter, t) {
    return filter.counts.map(function (c) {
      return c.zh + " " + t[c.name] + (c.rate ? "（" + (t[c.name + "_rate"] * 100).toFixed(1) + "%）" : "");
    }).join("；");
  }

  function levelAt(code) {
    if (!code) return null;
    for (var i = 0; i < levels.length; i++) if (levels[i].digits === code.length) return i;
    return null;
  }
  /* The level rolled up under a scope: the one below it (below the county, with no scope). */
  function levelBelow(code) {
    var at = code ? levelAt(code) : 0;
    return at === null || at + 1 >= levels.length ? null : levels[at + 1];
  }

  /* The filter, statistics and search panel. A layer is chosen (those that declare filters);
     its filter (the fields it declares, and the unit drilled down to) narrows what is drawn
     and what is counted. The figures and the chart are the view's (视野内); the roll-up gives
     each unit's own figures, and how many of them are in view. A row drills down a level. */
  function panel(map, opts) {
    levels = opts.levels;
    var trail = [];  // the units drilled down to: [{code, name, bbox}]
    var home = map.getBounds();  // the view the page opened on
    var current = opts.layer;
    var state = {};  // layer id -> {param: [values] or "YYYY-MM-DD"}: each layer keeps its own filter
    opts.layers.forEach(function (id) { state[id] = {}; });

    function filterOf(id) { return layers[id] && layers[id].filter; }
    function scope() { return trail.length ? String(trail[trail.length - 1].code || "") : ""; }

    /* Layer ID's filter as a query string (the same for its drawing and its statistics); the
       scope narrows the layers that are not themselves units. */
    function queryOf(id, withScope) {
      var q = new URLSearchParams();
      if (withScope && scope() && !layers[id].units) q.set("scope", scope());
      filterOf(id).filters.forEach(function (f) {
        var v = state[id][f.param];
        if (v === undefined || v === "") return;
        q.set(f.param, Array.isArray(v) ? (v.join(",") || "-") : v);
      });
      return q.toString();
    }
    function narrowed(id) { return queryOf(id, false) !== ""; }
    shownFilter = {  // what the docked ledger (ledger.js) follows: the layer picked and its filter
      layer: function () { return current; },
      query: function (id) { return state[id] && filterOf(id) ? queryOf(id, true) : ""; }
    };

    var Box = L.Control.extend({
      options: {position: "bottomleft"},
      onAdd: function () {
        var box = el("div", "guatu-panel");
        var head = el("div", "guatu-title-main guatu-panel-head", "筛选与统计 Filter & statistics ▾");
        head.title = "点击收起/展开 (click to fold)";
        head.addEventListener("click", function () {
          var folded = box.classList.toggle("guatu-folded");
          head.textContent = "筛选与统计 Filter & statistics " + (folded ? "▸" : "▾");
          fit();
        });
        if (narrow()) head.click();
        box.appendChild(head);
        var body = el("div", "guatu-panel-body");
        box.appendChild(body);
        var search = el("input", "guatu-search");
        search.type = "search";
        search.placeholder = "搜索编码、名称、地址 Search code, name, address";
        body.appendChild(search);
        var hits = el("div", "guatu-hits");
        body.appendChild(hits);

        var crumbs = el("div", "guatu-crumbs");
        body.appendChild(crumbs);
        var pick = el("select", "guatu-f-layer");
        opts.layers.forEach(function (id) {
          var option = el("option", null, layers[id].title.zh + " " + layers[id].title.en);
          option.value = id;
          pick.appendChild(option);
        });
        pick.value = current;
        var line = el("label", "guatu-filter");
        line.appendChild(el("span", "guatu-filter-name", "图层 Layer"));
        line.appendChild(pick);
        body.appendChild(line);
        var controls = el("div", "guatu-filters");
        body.appendChild(controls);
        var figures = el("div", "guatu-figures", "…");
        body.appendChild(figures);
        var chartPick = el("select", "guatu-f-chart");
        chartPick.title = "按哪个字段统计 (count by)";
        body.appendChild(chartPick);
        var chart = el("div", "guatu-chart");
        body.appendChild(chart);
        var rollup = el("table", "guatu-rollup");
        body.appendChild(rollup);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);
        var last = null;  // the last statistics shown

        function fit() { fitBelowTop(map, box); }
        window.addEventListener("resize", fit);
        var corner = map.getContainer().querySelector(".leaflet-top.leaflet-left");
        if (corner && window.ResizeObserver) {  // controls added later (the editor's bar, a wrapped title) push it down
          new ResizeObserver(function () { fit(); }).observe(corner);
        }

        /* The controls of the current layer's filter, built from its declaration. */
        function buildControls() {
          controls.textContent = "";
          var mine = state[current];
          filterOf(current).filters.forEach(function (f) {
            var cls = "guatu-f-" + f.param.replace(/_/g, "-");
            if (f.styled) {  // the styled field: a tick per value, all ticked at first
              controls.appendChild(el("div", "guatu-panel-sub", layers[current].title.zh + "（" + f.zh + "）"));
              var boxes = el("div", "guatu-statuses " + cls);
              f.choices.forEach(function (c) {
                var label = el("label", "guatu-choice");
                var tick = el("input");
                tick.type = "checkbox";
                tick.value = c.value;
                tick.name = f.param;
                tick.checked = !mine[f.param] || mine[f.param].indexOf(c.value) >= 0;
                label.appendChild(tick);
                label.appendChild(document.createTextNode(" " + c.label));
                boxes.appendChild(label);
              });
              boxes.addEventListener("change", function () {
                var ticked = Array.prototype.filter.call(boxes.querySelectorAll("input"), function (i) { return i.checked; })
                  .map(function (i) { return i.value; });
                if (ticked.length === f.choices.length) delete mine[f.param]; else mine[f.param] = ticked;
                apply();
              });
              controls.appendChild(boxes);
              return;
            }
            var row = el("label", "guatu-filter");
            row.appendChild(el("span", "guatu-filter-name", f.zh + (f.kind === "before" ? "早于" : "")));
            var control;
            if (f.kind === "before") {
              control = el("input", cls);
              control.type = "date";
              control.value = mine[f.param] || "";
            } else {
              control = el("select", cls);
              var any = el("option", null, "全部 all");
              any.value = "";
              control.appendChild(any);
              f.choices.forEach(function (c) {
                var option = el("option", null, c.label);
                option.value = c.value;
                control.appendChild(option);
              });
              control.value = mine[f.param] ? mine[f.param][0] : "";
            }
            control.title = f.en;
            control.addEventListener("change", function () {
              if (!control.value) delete mine[f.param];
              else mine[f.param] = f.kind === "before" ? control.value : [control.value];
              apply();
            });
            row.appendChild(control);
            controls.appendChild(row);
          });
          chartPick.textContent = "";
          filterOf(current).counted.forEach(function (c) {
            var option = el("option", null, "按" + c.zh + "统计 by " + c.en.toLowerCase());
            option.value = c.field;
            chartPick.appendChild(option);
          });
          chartPick.hidden = filterOf(current).counted.length < 2;
        }

        function showCrumbs() {
          crumbs.textContent = "";
          var top = el("a", "guatu-crumb", "全部 All");
          top.href = "#";
          crumbs.appendChild(top);
          top.addEventListener("click", function (e) {
            e.preventDefault();
            trail = [];
            map.fitBounds(home);  // back to where the page opened
            apply();
          });
          trail.forEach(function (unit, i) {
            crumbs.appendChild(document.createTextNode(" › "));
            var link = el("a", "guatu-crumb", unit.name || unit.code);
            link.href = "#";
            link.dataset.code = unit.code;
            link.addEventListener("click", function (e) {
              e.preventDefault();
              trail = trail.slice(0, i + 1);
              if (unit.bbox) map.fitBounds([[unit.bbox[1], unit.bbox[0]], [unit.bbox[3], unit.bbox[2]]]);
              apply();
            });
            crumbs.appendChild(link);
          });
        }

        function drawChart() {
          if (!last) return;
          var field = chartPick.value || (filterOf(current).counted[0] || {}).field;
          var style = layers[current].style;
          var rows = (last.by_field || {})[field] || [];
          valueChart(chart, rows, last.total.count, field === style.by ? style.colors : null);
        }

        function drawRollup(level, rows, inView) {
          rollup.textContent = "";
          if (!level) return;
          var filter = filterOf(current);
          var head = el("tr");
          var names = [[level.zh, level.en], [filter.counter, "the unit's own, whatever is in view"]];
          if (inView) names.push(["视野内", "in view"]);
          if (filter.area) names.push(["亩", "mu"]);
          filter.counts.forEach(function (c) {
            names.push([c.zh, c.en]);
            if (c.rate) names.push([c.zh + "率", c.en + " rate"]);
          });
          names.forEach(function (h) {
            var th = el("th", null, h[0]);
            th.title = h[1];
            head.appendChild(th);
          });
          rollup.appendChild(head);
          rows.forEach(function (row) {
            var tr = el("tr", "guatu-rollup-row");
            tr.dataset.code = row.code;
            tr.dataset.count = String(row.count);
            tr.title = "点击下钻 (click to drill down) " + row.code;
            var cells = [row.name || row.code, row.count];
            if (inView) cells.push(row.in_view);
            if (filter.area) cells.push(row.area_mu.toFixed(1));
            filter.counts.forEach(function (c) {
              cells.push(row[c.name]);
              if (c.rate) cells.push((row[c.name + "_rate"] * 100).toFixed(1) + "%");
            });
            cells.forEach(function (v) { tr.appendChild(el("td", null, v)); });
            if (!row.code) {  // features with no unit: counted, nothing to drill into
              tr.className = "guatu-rollup-none";
              tr.removeAttribute("title");
              delete tr.dataset.code;
              rollup.appendChild(tr);
              return;
            }
            tr.addEventListener("click", function () {
              trail.push({code: row.code, name: row.name, bbox: row.bbox});
              if (row.bbox) map.fitBounds([[row.bbox[1], row.bbox[0]], [row.bbox[3], row.bbox[2]]]);
              apply();
            });
            rollup.appendChild(tr);
          });
        }

        var ask = 0;
        function count() {
          var b = map.getBounds();
          var level = levelBelow(scope());
          var q = queryOf(current, true);
          var layerId = current;
          var url = opts.api + "/layers/" + layerId + "/stats?bbox=" +
            [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",") +
            (q ? "&" + q : "") + (level ? "&by=" + level.id : "");
          var mine = ++ask;
          figures.dataset.loading = "1";
          fetch(url).then(function (r) {
            return r.json().then(function (body) {
              if (!r.ok) throw new Error((body && body.message) || "HTTP " + r.status);
              return body;
            });
          }).catch(function (err) {
            if (mine !== ask) return null;
            figures.textContent = "统计失败 statistics failed: " + err.message;
            delete figures.dataset.loading;
            return null;
          }).then(function (s) {
            if (!s || mine !== ask || !s.total) return;
            var t = s.total, filter = filterOf(layerId);
            var said = figuresText(filter, t);
            figures.textContent = "视野内 in view：" + t.count + " " + filter.counter +
              (filter.area ? "，" + t.area_mu.toFixed(2) + " 亩" : "") + (said ? "；" + said : "");
            figures.dataset.count = String(t.count);
            figures.dataset.query = q;
            figures.dataset.layer = layerId;
            last = s;
            drawChart();
            drawRollup(level, s.rows || [], true);
            delete figures.dataset.loading;
            fit();
          });
        }

        function apply() {
          showCrumbs();
          opts.layers.forEach(function (id) { if (refilter[id]) refilter[id](queryOf(id, true)); });
          mapQuery = opts.layers.filter(narrowed).map(function (id) {  // each layer's own filter, as drawn
            return "narrow_" + id + "=" + encodeURIComponent(queryOf(id, false));
          }).join("&");
          map.fire("guatu:filter");
          count();
        }
        pick.addEventListener("change", function () {
          current = pick.value;
          buildControls();
          count();
          map.fire("guatu:filter");
        });
        chartPick.addEventListener("change", drawChart);
        map.on("moveend", count);
        buildControls();
        showCrumbs();
        count();
        setTimeout(fit, 0);

        /* Go to a search hit and open its ledger; if the filter hides it, say so and offer to clear it. */
        function go(hit, row) {
          if (trail.length) { trail = []; apply(); }  // what is found must not be hidden by a drill-down
          var b = hit.bbox;
          var centre = L.latLngBounds([[b[1], b[0]], [b[3], b[2]]]).getCenter();
          map.fitBounds([[b[1], b[0]], [b[3], b[2]]], {maxZoom: 18, animate: false});
          var opts2 = layers[hit.layer];
          Array.prototype.forEach.call(hits.querySelectorAll(".guatu-hit-hidden"), function (n) { n.remove(); });
          if (hit.kept === false && state[hit.layer]) {
            var note = el("div", "guatu-hit-hidden guatu-warning",
              "当前筛选隐藏了此要素，地图上不显示 (hidden by the current filter) ");
            var clear = el("button", "guatu-button guatu-clear-filter", "清除筛选 Clear filter");
            clear.addEventListener("click", function () {
              state[hit.layer] = {};
              if (hit.layer === current) buildControls();
              apply();
              note.remove();
              hit.kept = true;
            });
            note.appendChild(clear);
            row.parentNode.insertBefore(note, row.nextSibling);
            fit();
          }
          if (opts2) openLedger(map, opts2, hit.id, centre);
        }

        function find() {
          var q = search.value.trim();
          hits.textContent = "";
          if (!q) return;
          var filtered = narrowed(current) ? "&layer=" + current + "&" + queryOf(current, false) : "";
          fetch(opts.api + "/search?q=" + encodeURIComponent(q) + filtered).then(function (r) { return r.json(); }).then(function (found) {
            if (!found.length) { hits.appendChild(el("div", "guatu-hit-none", "没有找到 nothing found")); return; }
            found.forEach(function (hit) {
              var row = el("div", "guatu-hit" + (hit.kept === false ? " guatu-hit-filtered" : ""),
                hit.layer_zh + " " + hit.code + (hit.name ? " " + hit.name : "") + (hit.kept === false ? "（已被筛选隐藏 hidden）" : ""));
              row.addEventListener("click", function () { go(hit, row); });
              hits.appendChild(row);
            });
            if (found.length === 1 || found[0].exact) hits.firstChild.click();
            fit();
          });
        }
        search.addEventListener("keydown", function (e) { if (e.key === "Enter") find(); });
        return box;
      }
    });
    new Box().addTo(map);
  }

  /* The properties of LAYER's features drawn now (page tests and screenshots). */
  function drawn(layer) { return drawnBy[layer] ? drawnBy[layer]() : []; }
  /* A page point inside feature ID of tiled LAYER as drawn now (null if none), and its style: the
     tiles are canvases, so the page tests click there and read the style here. */
  function pointOf(layer, id) { return pointsOf[layer] ? pointsOf[layer](id) : null; }
  function styleOf(layer, id) { return stylesOf[layer] ? stylesOf[layer](id) : null; }

  /* What the editing module (edit.js) reads and calls: a layer's options and group, a reload after
     a save, and a hook adding its buttons to every popup. */
  function onPopup(hook) { popupHooks.push(hook); }
  function reload(layer) { if (reloaders[layer]) reloaders[layer](); }
  function options(layer) { return layers[layer]; }
  function group(layer) { return groups[layer]; }
  /* Another colouring (contracts.js): PAINT(opts, props, style) returns the style to draw, or null. */
  function paint(fn) { paints.push(fn); }
  function restyle(layer) { if (restylers[layer]) restylers[layer](); }

  window.guatu = {
    bboxLayer: bboxLayer, tileLayer: tileLayer, chrome: chrome, panel: panel,
    idle: idle, drawn: drawn, pointOf: pointOf, styleOf: styleOf, onPopup: onPopup, reload: reload, options: options, group: group,
    look: look, formatValue: formatValue, paint: paint, restyle: restyle,
    shownFilter: function () { return shownFilter; }
  };
})();
