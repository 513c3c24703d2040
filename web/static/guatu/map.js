/* guatu 挂图: layers fetched by bounding box, styled by status, popups built as text. */
(function () {
  "use strict";

  var status = {};      // layer id -> status line
  var statusBox = null;
  var loaders = [];     // every bbox layer group, to tell when all are loaded

  var el = guatuDom.el;

  /* Mask personal data (PIPL): keep the first character, star the rest but the last. */
  function mask(value) {
    var s = String(value);
    if (s.length <= 1) return "*";
    if (s.length === 2) return s.charAt(0) + "*";
    return s.charAt(0) + "*".repeat(s.length - 2) + s.charAt(s.length - 1);
  }

  function formatValue(field, value) {
    if (value === null || value === undefined || value === "") return "—";
    if (field.personal) return mask(value);
    if (field.name === "area_mu") return Number(value).toFixed(2);
    if (field.name === "area_m2") return Number(value).toFixed(1);
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
    return box;
  }

  function colourOf(style, props) {
    if (style.by && props && Object.prototype.hasOwnProperty.call(style.colors, props[style.by])) {
      return style.colors[props[style.by]];
    }
    return style.default;
  }

  function showStatus() {
    if (!statusBox) return;
    statusBox.textContent = "";
    Object.keys(status).sort().forEach(function (id) {
      statusBox.appendChild(el("div", "guatu-status-" + id, status[id]));
    });
  }

  var refilter = {};  // tiled layer id -> function(query): draw only what the map's filter keeps
  var NARROW = window.matchMedia("(max-width: 640px)").matches;  // a phone: panels start folded
  var mapQuery = "";   // the panel's filter as a query string (the print button prints what is shown)
  var drawnBy = {};    // layer id -> function(): properties of the features drawn now (tests, screenshots)

  function bboxLayer(group, map, opts) {
    var paneName = "guatu-" + opts.id;
    if (!map.getPane(paneName)) {
      map.createPane(paneName).style.zIndex = String(400 + opts.order);
    }
    var style = opts.style;
    var shown = {};  // feature id -> {layer, stamp}: kept across refreshes so open popups stay open
    var lastAdded = null;
    var geo = L.geoJSON(null, {
      pane: paneName,
      style: function (feature) {
        var colour = colourOf(style, feature.properties);
        var loud = style.emphasis && feature.properties && feature.properties[style.by] === style.emphasis;
        return {
          // Filled shapes get a neutral outline; outlines-only layers (grids) show their colour.
          color: loud || !style.fill || style.fillOpacity < 0.2 ? colour : "#374151",
          weight: loud ? Math.max(2, style.weight * 2.5) : style.weight,
          fillColor: colour,
          fillOpacity: style.fill ? (loud ? Math.min(0.85, style.fillOpacity + 0.3) : style.fillOpacity) : 0,
          fill: style.fill, dashArray: style.dash,
          className: "guatu-f guatu-" + opts.id + " guatu-" + opts.id + "-" + feature.id + (loud ? " guatu-emphasis" : "")
        };
      },
      pointToLayer: function (feature, latlng) {
        return L.circleMarker(latlng, {pane: paneName, radius: style.radius});
      },
      onEachFeature: function (feature, layer) {
        layer.bindPopup(function () { return popupNode(opts, feature); }, {
          maxWidth: 360, autoPanPaddingTopLeft: [60, 150], autoPanPaddingBottomRight: [40, 40]
        });
        if (layer.setStyle) {  // highlight the feature whose ledger is open
          layer.on("popupopen", function () { layer.setStyle({weight: 4, color: "#f59e0b", dashArray: null}); });
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
        status[opts.id] = opts.title.zh + "：请放大到 " + style.minZoom + " 级查看 (zoom in to see " + opts.title.en + ")";
        showStatus();
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
      fetch(opts.url + "?bbox=" + bbox.join(",") + "&limit=" + opts.limit,
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
    drawnBy[opts.id] = function () {
      return map.hasLayer(group) ? Object.keys(shown).map(function (id) { return shown[id].layer.feature.properties; }) : [];
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
    var paneName = "guatu-" + opts.id;
    if (!map.getPane(paneName)) {
      map.createPane(paneName).style.zIndex = String(400 + opts.order);
    }
    var style = opts.style;
    var query = "";

    function look(props) {
      var colour = colourOf(style, props);
      var loud = style.emphasis && props[style.by] === style.emphasis;
      return {
        color: loud || !style.fill || style.fillOpacity < 0.2 ? colour : "#374151",
        weight: loud ? Math.max(2, style.weight * 2.5) : style.weight,
        fillColor: colour,
        fillOpacity: style.fill ? (loud ? Math.min(0.85, style.fillOpacity + 0.3) : style.fillOpacity) : 0,
        fill: style.fill, dashArray: style.dash, radius: style.radius,
        className: "guatu-f guatu-" + opts.id + " guatu-" + opts.id + "-" + props.id + (loud ? " guatu-emphasis" : "")
      };
    }

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
    styles[opts.id] = function (props) { return look(props); };
    var tiles = new Tiles(opts.tiles, {
      pane: paneName,
      rendererFactory: L.svg.tile,  // real paths: hit-testing and the popup highlight by the browser
      vectorTileLayerStyles: styles,
      interactive: true,  // no minZoom here: Leaflet would stop the whole map zooming out below it
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

    var popup = L.popup({maxWidth: 360, autoPanPaddingTopLeft: [60, 150], autoPanPaddingBottomRight: [40, 40]});
    var lit = null;
    tiles.on("click", function (e) {
      var id = e.layer.properties.id;
      L.DomEvent.stop(e);
      popup.setLatLng(e.latlng).setContent(el("div", "guatu-popup", "加载中… loading")).openOn(map);
      if (lit !== null) tiles.resetFeatureStyle(lit);
      lit = id;
      tiles.setFeatureStyle(id, L.extend(look(e.layer.properties), {weight: 4, color: "#f59e0b", dashArray: null}));
      fetch(opts.url + "/" + id, {headers: {Accept: "application/geo+json"}})
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (feature) { if (lit === id) popup.setContent(popupNode(opts, feature)); })
        .catch(function (err) { if (lit === id) popup.setContent(el("div", "guatu-bad", "读取失败 failed: " + err.message)); });
    });
    map.on("popupclose", function (e) {
      if (e.popup === popup && lit !== null) { tiles.resetFeatureStyle(lit); lit = null; }
    });

    function say() {
      if (!map.hasLayer(group)) { delete status[opts.id]; showStatus(); return; }
      status[opts.id] = map.getZoom() < style.minZoom
        ? opts.title.zh + "：请放大到 " + style.minZoom + " 级查看 (zoom in to see " + opts.title.en + ")"
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
    refilter[opts.id] = function (q) {
      if (q === query) return;
      query = q;
      map.closePopup(popup);  // its parcel may be filtered out
      delete status[opts.id + "~"];
      var visible = map.hasLayer(group) && map.getZoom() >= style.minZoom;
      tiles.setUrl(opts.tiles + (q ? "?" + q : ""), !visible);  // hidden: the next view fetches
      settle();
    };
    loaders.push(group);
  }

  /* "#zoom/lat/lon" in the address (as the checks page links to a finding): open the map there. */
  function goToHash(map) {
    var m = /^#(\d{1,2})\/(-?\d{1,3}(?:\.\d+)?)\/(-?\d{1,3}(?:\.\d+)?)$/.exec(window.location.hash);
    if (!m || Math.abs(Number(m[2])) > 90 || Math.abs(Number(m[3])) > 180) return;
    map.setView([Number(m[2]), Number(m[3])], Math.min(Number(m[1]), map.getMaxZoom()));
  }

  function chrome(map, opts) {
    goToHash(map);
    window.addEventListener("hashchange", function () { goToHash(map); });
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
        function aim() {  // the wall map of what is on screen, on the chosen paper
          var b = map.getBounds();
          var parts = size.value.split("/");
          var extra = parts[1] === "png" ? "&format=png" : "&format=pdf" + (parts[1] ? "&sheets=" + parts[1] : "");
          print.href = "/api/print?size=" + parts[0] + extra + "&bbox=" +
            [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",") +
            (mapQuery ? "&" + mapQuery : "");
        }
        map.on("moveend guatu:filter", aim);
        size.addEventListener("change", aim);
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
        sub.appendChild(printing);
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
        if (NARROW) title.click();  // a phone shows the map first; panels open on a tap
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

  /* Bars per status value: count and share, in the map's colours (panel and cockpit). */
  function statusChart(chart, rows, total, colors) {
    chart.textContent = "";
    var most = Math.max.apply(null, [1].concat(rows.map(function (r) { return r.count; })));
    rows.forEach(function (row) {
      var line = el("div", "guatu-bar");
      line.dataset.value = row.value;
      line.dataset.count = String(row.count);
      line.appendChild(el("span", "guatu-bar-label", row.value));
      var track = el("span", "guatu-bar-track");
      var fill = el("span", "guatu-bar-fill");
      fill.style.width = (100 * row.count / most).toFixed(1) + "%";
      fill.style.background = colors[row.value] || "#6b7280";
      track.appendChild(fill);
      line.appendChild(track);
      line.appendChild(el("span", "guatu-bar-value", row.count + "（" +
        (total ? (100 * row.count / total).toFixed(0) : 0) + "%）"));
      chart.appendChild(line);
    });
  }

  /* The filter, statistics and search panel. The filter (status, land-use class, ownership,
     idle since, and the unit drilled down to) narrows what is drawn — the tiles are filtered
     on the server — and what is counted; the figures, the chart per status and the roll-up
     follow the view. A row of the roll-up drills down street → community → grid. */
  function panel(map, opts) {
    var NEXT = {0: "street", 9: "community", 12: "grid"};  // roll up the level below the scope
    var LEVEL = {street: "街道 Street", community: "社区 Community", grid: "网格 Grid"};
    var trail = [];  // the units drilled down to: [{code, name}]
    var home = map.getBounds();  // the view the page opened on

    function field(box, zh, control) {
      var line = el("label", "guatu-filter");
      line.appendChild(el("span", "guatu-filter-name", zh));
      line.appendChild(control);
      box.appendChild(line);
      return control;
    }
    function select(cls, choices) {
      var node = el("select", cls);
      var any = el("option", null, "全部 all");
      any.value = "";
      node.appendChild(any);
      choices.forEach(function (c) {
        var option = el("option", null, c.label);
        option.value = c.value;
        node.appendChild(option);
      });
      return node;
    }

    var Box = L.Control.extend({
      options: {position: "bottomleft"},
      onAdd: function () {
        var box = el("div", "guatu-panel");
        var head = el("div", "guatu-title-main guatu-panel-head", "筛选与统计 Filter & statistics ▾");
        head.title = "点击收起/展开 (click to fold)";
        head.addEventListener("click", function () {
          var folded = box.classList.toggle("guatu-folded");
          head.textContent = "筛选与统计 Filter & statistics " + (folded ? "▸" : "▾");
        });
        if (NARROW) head.click();
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
        body.appendChild(el("div", "guatu-panel-sub", opts.title + "（" + opts.fieldZh + "）"));
        var boxes = el("div", "guatu-statuses");
        opts.values.forEach(function (value) {
          var label = el("label", "guatu-choice");
          var tick = el("input");
          tick.type = "checkbox";
          tick.checked = true;
          tick.value = value;
          tick.name = "status";
          label.appendChild(tick);
          label.appendChild(document.createTextNode(" " + value));
          boxes.appendChild(label);
        });
        body.appendChild(boxes);
        var more = el("div", "guatu-filters");
        var landUse = field(more, "地类 Land use", select("guatu-f-land-use",
          opts.landUse.map(function (c) { return {value: c.code, label: c.code + " " + c.name}; })));
        var owner = field(more, "权属 Ownership", select("guatu-f-ownership",
          opts.ownership.map(function (o) { return {value: o, label: o}; })));
        var since = el("input", "guatu-f-idle-since");
        since.type = "date";
        field(more, "闲置早于 Idle before", since);
        body.appendChild(more);

        var figures = el("div", "guatu-figures", "…");
        body.appendChild(figures);
        var chart = el("div", "guatu-chart");
        body.appendChild(chart);
        var rollup = el("table", "guatu-rollup");
        body.appendChild(rollup);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);

        function chosen() {
          return Array.prototype.filter.call(boxes.querySelectorAll("input"), function (i) { return i.checked; })
            .map(function (i) { return i.value; });
        }
        function scope() { return trail.length ? String(trail[trail.length - 1].code || "") : ""; }

        /* The filter as a query string, the same for the tiles and the statistics. */
        function query() {
          var q = new URLSearchParams();
          var values = chosen();
          if (scope()) q.set("scope", scope());
          if (values.length < opts.values.length) q.set("status", values.join(",") || "-");
          if (landUse.value) q.set("land_use", landUse.value);
          if (owner.value) q.set("ownership", owner.value);
          if (since.value) q.set("idle_since_before", since.value);
          return q.toString();
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

        function drawRollup(by, rows) {
          rollup.textContent = "";
          if (!by) return;
          var head = el("tr");
          [LEVEL[by], "块", "亩", "闲置", "闲置率"].forEach(function (h) { head.appendChild(el("th", null, h)); });
          rollup.appendChild(head);
          rows.forEach(function (row) {
            var tr = el("tr", "guatu-rollup-row");
            tr.dataset.code = row.code;
            tr.title = "点击下钻 (click to drill down) " + row.code;
            [row.name || row.code, row.count, row.area_mu.toFixed(1), row.idle, (row.idle_rate * 100).toFixed(1) + "%"]
              .forEach(function (v) { tr.appendChild(el("td", null, v)); });
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
          var by = NEXT[scope().length];
          var q = query();
          var url = opts.api + "/layers/" + opts.layer + "/stats?bbox=" +
            [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",") +
            (q ? "&" + q : "") + (by ? "&by=" + by : "");
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
            var t = s.total;
            figures.textContent = "视野内 in view：" + t.count + " 块，" + t.area_mu.toFixed(2) + " 亩；闲置 idle " +
              t.idle + "（" + (t.idle_rate * 100).toFixed(1) + "%）" + (t.revitalised != null ? "；已盘活 revitalised " + t.revitalised : "");
            figures.dataset.count = String(t.count);
            figures.dataset.query = q;
            statusChart(chart, s.by_status || [], t.count, opts.colors);
            drawRollup(by, s.rows || []);
            delete figures.dataset.loading;
          });
        }

        function apply() {
          showCrumbs();
          mapQuery = query();
          map.fire("guatu:filter");
          if (refilter[opts.layer]) refilter[opts.layer](query());
          count();
        }
        boxes.addEventListener("change", apply);
        [landUse, owner, since].forEach(function (c) { c.addEventListener("change", apply); });
        map.on("moveend", count);
        showCrumbs();
        count();

        function find() {
          var q = search.value.trim();
          hits.textContent = "";
          if (!q) return;
          fetch(opts.api + "/search?q=" + encodeURIComponent(q)).then(function (r) { return r.json(); }).then(function (found) {
            if (!found.length) { hits.appendChild(el("div", "guatu-hit-none", "没有找到 nothing found")); return; }
            found.forEach(function (hit) {
              var row = el("div", "guatu-hit", hit.layer_zh + " " + hit.code + (hit.name ? " " + hit.name : ""));
              row.addEventListener("click", function () {
                var b = hit.bbox;
                if (trail.length) { trail = []; apply(); }  // what is found must not be hidden by a drill-down
                map.fitBounds([[b[1], b[0]], [b[3], b[2]]], {maxZoom: 18});
              });
              hits.appendChild(row);
            });
            if (found.length === 1 || found[0].exact) hits.firstChild.click();
          });
        }
        search.addEventListener("keydown", function (e) { if (e.key === "Enter") find(); });
        return box;
      }
    });
    new Box().addTo(map);
  }

  /* The cockpit (驾驶舱) for a street office's big screen: totals and a roll-up per community. */
  function cockpit(map, opts) {
    document.body.classList.add("guatu-cockpit");
    var Box = L.Control.extend({
      options: {position: "topright"},
      onAdd: function () {
        var box = el("div", "guatu-cockpit-panel");
        box.appendChild(el("div", "guatu-title-main", "挂图作战 驾驶舱 Cockpit"));
        var totals = el("div", "guatu-cockpit-totals", "…");
        box.appendChild(totals);
        var chart = el("div", "guatu-chart guatu-cockpit-chart");
        box.appendChild(chart);
        var table = el("table", "guatu-cockpit-table");
        box.appendChild(table);
        var stamp = el("div", "guatu-finding-id");
        box.appendChild(stamp);
        function load() {
          fetch(opts.api + "/layers/" + opts.layer + "/stats?by=community").then(function (r) { return r.json(); }).then(function (s) {
            var t = s.total;
            totals.textContent = "地块 " + t.count + " 块 · " + t.area_mu.toFixed(1) + " 亩 · 闲置 " + t.idle +
              "（" + (t.idle_rate * 100).toFixed(1) + "%）· 已盘活 " + (t.revitalised || 0);
            statusChart(chart, s.by_status || [], t.count, opts.colors);
            table.textContent = "";
            var head = el("tr");
            ["社区 Community", "地块", "亩", "闲置", "闲置率", "已盘活"].forEach(function (h) { head.appendChild(el("th", null, h)); });
            table.appendChild(head);
            s.rows.forEach(function (row) {
              var tr = el("tr", "guatu-cockpit-row");
              [row.name || row.code, row.count, row.area_mu.toFixed(1), row.idle, (row.idle_rate * 100).toFixed(1) + "%",
               row.revitalised || 0].forEach(function (v) { tr.appendChild(el("td", null, v)); });
              table.appendChild(tr);
            });
            stamp.textContent = "更新 updated " + new Date().toLocaleTimeString();
          });
        }
        load();
        setInterval(load, opts.refresh_s * 1000);
        return box;
      }
    });
    new Box().addTo(map);
  }

  /* The properties of LAYER's features drawn now (page tests and screenshots). */
  function drawn(layer) { return drawnBy[layer] ? drawnBy[layer]() : []; }

  window.guatu = {
    bboxLayer: bboxLayer, tileLayer: tileLayer, chrome: chrome, panel: panel, cockpit: cockpit,
    mask: mask, idle: idle, drawn: drawn
  };
})();
