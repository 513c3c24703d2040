/* guatu 挂图: layers fetched by bounding box, styled by status, popups built as text. */
(function () {
  "use strict";

  var status = {};      // layer id -> status line
  var statusBox = null;
  var loaders = [];     // every bbox layer group, to tell when all are loaded

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

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

  var filters = {};  // layer id -> {field, values}
  var refreshers = {};  // layer id -> redraw from scratch

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
      var only = filters[opts.id];  // {field, values}: a planner's filter, or none
      fc.features.forEach(function (feature) {
        if (only && only.values.indexOf(feature.properties[only.field]) < 0) return;
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
    refreshers[opts.id] = function () { clear(); refresh(); };
    group.on("add", refresh);
    group.on("remove", function () { delete status[opts.id]; showStatus(); });
    loaders.push(group);
    refresh();
  }

  function chrome(map, opts) {
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
        var print = el("a", "guatu-link guatu-print", "打印挂图 Print (A3 PDF)");
        print.target = "_blank";
        function aim() {  // the wall map of what is on screen
          var b = map.getBounds();
          print.href = "/api/print?size=A3&format=pdf&bbox=" +
            [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",");
        }
        map.on("moveend", aim);
        aim();
        sub.appendChild(print);
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

  /* The filter, statistics and search panel: status boxes narrow what is drawn and counted,
     the figures follow the view, a code or name found zooms the map to it. */
  function panel(map, opts) {
    var Box = L.Control.extend({
      options: {position: "bottomleft"},
      onAdd: function () {
        var box = el("div", "guatu-panel");
        box.appendChild(el("div", "guatu-title-main", "筛选与统计 Filter & statistics"));
        var search = el("input", "guatu-search");
        search.type = "search";
        search.placeholder = "搜索编码、名称、地址 Search code, name, address";
        box.appendChild(search);
        var hits = el("div", "guatu-hits");
        box.appendChild(hits);
        box.appendChild(el("div", "guatu-panel-sub", opts.title + "（" + opts.fieldZh + "）"));
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
        box.appendChild(boxes);
        var figures = el("div", "guatu-figures", "…");
        box.appendChild(figures);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);

        function chosen() {
          return Array.prototype.filter.call(boxes.querySelectorAll("input"), function (i) { return i.checked; })
            .map(function (i) { return i.value; });
        }
        var ask = 0;
        function count() {
          var b = map.getBounds();
          var values = chosen();
          var url = opts.api + "/layers/" + opts.layer + "/stats?bbox=" +
            [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",") +
            (values.length < opts.values.length ? "&status=" + encodeURIComponent(values.join(",") || "-") : "");
          var mine = ++ask;
          fetch(url).then(function (r) { return r.json(); }).then(function (s) {
            if (mine !== ask || !s.total) return;
            var t = s.total;
            figures.textContent = "视野内 in view：" + t.count + " 块，" + t.area_mu.toFixed(2) + " 亩；闲置 idle " +
              t.idle + "（" + (t.idle_rate * 100).toFixed(1) + "%）" + (t.revitalised != null ? "；已盘活 " + t.revitalised : "");
            figures.dataset.count = String(t.count);
          });
        }
        boxes.addEventListener("change", function () {
          var values = chosen();
          filters[opts.layer] = values.length < opts.values.length ? {field: opts.field, values: values} : null;
          if (refreshers[opts.layer]) refreshers[opts.layer]();
          count();
        });
        map.on("moveend", count);
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
        var table = el("table", "guatu-cockpit-table");
        box.appendChild(table);
        var stamp = el("div", "guatu-finding-id");
        box.appendChild(stamp);
        function load() {
          fetch(opts.api + "/layers/" + opts.layer + "/stats?by=community").then(function (r) { return r.json(); }).then(function (s) {
            var t = s.total;
            totals.textContent = "地块 " + t.count + " 块 · " + t.area_mu.toFixed(1) + " 亩 · 闲置 " + t.idle +
              "（" + (t.idle_rate * 100).toFixed(1) + "%）· 已盘活 " + (t.revitalised || 0);
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

  window.guatu = {bboxLayer: bboxLayer, chrome: chrome, panel: panel, cockpit: cockpit, mask: mask, idle: idle};
})();
