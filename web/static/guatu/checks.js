/* guatu 挂图 checks page: pick a scope, list the boundary findings, draw them among the scope's units and the
   features they name, zoom to one, open the map there. Levels come from the hierarchy (opts.levels) and layers
   from the server's context answer: nothing here names a layer or a field. */
(function () {
  "use strict";

  var COLOURS = {error: "#dc2626", warning: "#d97706"};
  var RULES = {
    gap: "缝隙 gap", overlap: "重叠 overlap", outside_parent: "越出上级 outside parent",
    sliver: "碎片 sliver", invalid_geometry: "图形无效 invalid", duplicate_code: "编码重复 duplicate code",
    code_parent_mismatch: "编码与上级不符 code vs parent", numbering_order: "编号顺序 numbering",
    outside_frame: "不在所属单元内 outside every unit", outside_own_frame: "越出所属单元 outside its own unit",
    straddles_frames: "跨单元 straddles units", attribute_location_mismatch: "属性与位置不符 attribute vs location",
    not_near_link: "未与关联要素相接 not at its link", link_missing: "关联缺失 link missing",
    household_without_zone: "无责任区 no zone", no_children: "尚无下级 nothing inside"
  };
  var MAX_ZOOM = 18;  // a finding is shown with its neighbours, never alone at street-sign scale

  var el = guatuDom.el, text = guatuDom.text;

  function start(map, opts) {
    var units = L.featureGroup().addTo(map);
    var involved = L.featureGroup().addTo(map);
    var labels = L.layerGroup().addTo(map);
    var nearLabels = L.layerGroup().addTo(map);
    var unitList = [];
    var found = L.featureGroup().addTo(map);
    var shapes = {};
    var rings = {};
    var selected = null;
    var box = null;

    function levelOf(code) {
      var n = String(code || "").length;
      return opts.levels.filter(function (lv) { return lv.digits === n; })[0] || null;
    }

    /* The code of the unit CODE lies in (by the level above its own), "" for the widest. */
    function parentOf(code) {
      var at = opts.levels.indexOf(levelOf(code));
      return at > 0 ? String(code).slice(0, opts.levels[at - 1].digits) : "";
    }

    /* A phone: unit labels shrink to the code's own part (a grid's sequence), or they hide each other. */
    function narrow() { return window.matchMedia("(max-width: 640px)").matches; }

    /* The part of CODE after the scope's own code (a grid "…006" in its community), the whole code elsewhere. */
    function shortCode(code, scope) {
      code = String(code);
      return scope && code.length > scope.length && code.indexOf(scope) === 0 ? "…" + code.slice(scope.length) : code;
    }

    /* Keep what is fitted clear of the panel: beside it on a wide screen, below it on a phone. */
    function padding() {
      var size = map.getSize(), r = box ? box.getBoundingClientRect() : {right: 0, bottom: 0, width: 0};
      if (r.width > size.x * 0.6) return {paddingTopLeft: [20, r.bottom + 10], paddingBottomRight: [20, 20]};
      return {paddingTopLeft: [r.right + 20, 20], paddingBottomRight: [20, 20]};
    }

    function fit(bounds, maxZoom) {
      if (!bounds.isValid()) return;
      var options = padding();
      options.maxZoom = maxZoom;
      map.fitBounds(bounds, options);
    }

    /* Where the map page opens on a finding: its centre, zoomed to show it with its surroundings. */
    function mapLink(bounds) {
      var zoom = Math.min(map.getBoundsZoom(bounds.pad(1.5)), MAX_ZOOM);
      var c = bounds.getCenter();
      return "/#" + zoom + "/" + c.lat.toFixed(6) + "/" + c.lng.toFixed(6);
    }

    function label(latlng, cls, lines, direction) {
      var node = el("div");
      lines.forEach(function (line, i) { node.appendChild(el("div", i ? "guatu-label-sub" : null, line)); });
      labels.addLayer(L.tooltip({permanent: true, direction: direction || "center", className: cls, interactive: false,
                                 offset: direction === "top" ? [0, -4] : [0, 0]})
        .setLatLng(latlng).setContent(node));
    }

    function inRing(x, y, ring) {
      var inside = false;
      for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        var a = ring[i], b = ring[j];
        if ((a[1] > y) !== (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0]) inside = !inside;
      }
      return inside;
    }

    function contains(geometry, latlng) {
      var polygons = geometry.type === "Polygon" ? [geometry.coordinates] :
        geometry.type === "MultiPolygon" ? geometry.coordinates : [];
      return polygons.some(function (rings) {
        return rings.filter(function (ring) { return inRing(latlng.lng, latlng.lat, ring); }).length % 2 === 1;
      });
    }

    /* Zoomed in on a finding, the units' own labels are far off screen: name the units around it, beside it,
       where a label's box lies inside the unit, clear of the finding, of the panel and of the screen's edges. */
    function labelNeighbours(bounds) {
      nearLabels.clearLayers();
      var size = map.getSize(), centre = map.latLngToContainerPoint(bounds.getCenter());
      var panel = box ? box.getBoundingClientRect() : null, origin = map.getContainer().getBoundingClientRect();
      function free(x, y) {
        if (x < 70 || y < 30 || x > size.x - 70 || y > size.y - 30) return false;
        return !panel || !(x + origin.left > panel.left - 70 && x + origin.left < panel.right + 70 &&
                           y + origin.top > panel.top - 30 && y + origin.top < panel.bottom + 30);
      }
      var spots = [];
      [160, 240, 320, 110].forEach(function (r) {
        for (var k = 0; k < 16; k++) {
          var x = centre.x + r * Math.cos(k * Math.PI / 8), y = centre.y + r * Math.sin(k * Math.PI / 8);
          if (free(x, y)) spots.push([x, y]);
        }
      });
      function at(x, y) { return map.containerPointToLatLng([x, y]); }
      unitList.forEach(function (f) {
        var p = f.properties;
        if (map.getBounds().contains([p.label_at[1], p.label_at[0]])) return;  // its own label is in view
        var inside = spots.filter(function (s) { return contains(f.geometry, at(s[0], s[1])); });
        var roomy = inside.filter(function (s) {  // the whole label fits in the unit
          return [[-60, -20], [60, -20], [-60, 20], [60, 20]].every(function (d) {
            return contains(f.geometry, at(s[0] + d[0], s[1] + d[1]));
          });
        });
        var spot = roomy[0] || inside[0];
        if (!spot) return;
        var node = el("div", null, p.name || p.code);
        node.appendChild(el("div", "guatu-label-sub", narrow() ? shortCode(p.code, parentOf(p.code)) : p.code));
        nearLabels.addLayer(L.tooltip({permanent: true, direction: "center", className: "guatu-unit-label guatu-near-label",
                                       interactive: false}).setLatLng(at(spot[0], spot[1])).setContent(node));
      });
    }

    /* A finding a few metres across is a dot at a community's scale: ring it until it is big enough to see. */
    function ringSmall() {
      Object.keys(shapes).forEach(function (id) {
        var b = shapes[id].getBounds(), ring = rings[id];
        if (!ring || !b.isValid()) return;
        var a = map.latLngToContainerPoint(b.getNorthWest()), z = map.latLngToContainerPoint(b.getSouthEast());
        var small = Math.max(Math.abs(z.x - a.x), Math.abs(z.y - a.y)) < 24;
        ring.setStyle({opacity: small ? 1 : 0, fillOpacity: small ? 0.15 : 0});
      });
    }
    map.on("zoomend", ringSmall);

    function describe(props, layers) {
      var layer = layers[props.layer] || {zh: props.layer, en: ""};
      var lines = [layer.zh + " " + props.code + (props.name ? " " + props.name : "")];
      (props.fields || []).forEach(function (f) { lines.push(f.zh + "：" + f.value); });
      var node = el("div");
      lines.forEach(function (line) { node.appendChild(el("div", null, line)); });
      return node;
    }

    /* The scope's units (its communities or grids, with their codes) and the features the findings name. */
    function drawContext(ctx, scope) {
      units.clearLayers();
      involved.clearLayers();
      labels.clearLayers();
      nearLabels.clearLayers();
      unitList = [];
      var scopeLevel = levelOf(scope);
      var unitFeatures = ctx.units.features;
      var hasChildren = unitFeatures.some(function (f) { return f.properties.code !== scope; }) &&
        unitFeatures.some(function (f) { return levelOf(f.properties.code) !== scopeLevel; });
      unitFeatures.forEach(function (f) {
        var p = f.properties;
        var frame = p.code === scope || (!scope && levelOf(p.code) === levelOf(unitFeatures[0].properties.code));
        var shape = L.geoJSON(f, {style: {
          color: frame ? "#1e3a8a" : "#2563eb", weight: frame ? 3 : 1.5, fill: !frame, fillOpacity: 0.03,
          className: "guatu-unit guatu-unit-" + (p.level || "other") + (frame ? " guatu-frame" : "")
        }});
        shape.bindTooltip(describe(p, ctx.layers), {sticky: true});
        units.addLayer(shape);
        if (frame && hasChildren) return;  // the frame is named in the panel; its children carry the labels
        unitList.push(f);
        var lines = narrow() ? [shortCode(p.code, parentOf(p.code))] : [p.name || p.code, p.code];
        label([p.label_at[1], p.label_at[0]], "guatu-unit-label", lines);
      });
      ctx.features.features.forEach(function (f) {
        var p = f.properties;
        var layer = ctx.layers[p.layer] || {color: "#6b7280", fill: true, zh: p.layer};
        var shape = L.geoJSON(f, {
          style: {color: layer.color, weight: 2, dashArray: "5 4", fillOpacity: layer.fill ? 0.12 : 0,
                  className: "guatu-involved guatu-involved-" + p.layer},
          pointToLayer: function (_, latlng) {
            return L.circleMarker(latlng, {radius: 6, color: layer.color, className: "guatu-involved guatu-involved-" + p.layer});
          }
        });
        shape.bindTooltip(describe(p, ctx.layers), {sticky: true});
        involved.addLayer(shape);
        var top = shape.getBounds();  // labelled above it: the finding on it stays in view
        label([top.getNorth(), top.getCenter().lng], "guatu-involved-label", [layer.zh + " " + shortCode(p.code, scope)],
          "top");
      });
    }

    function highlight(id) {
      if (selected && shapes[selected]) shapes[selected].setStyle({weight: 2});
      document.querySelectorAll(".guatu-finding.guatu-selected").forEach(function (n) { n.classList.remove("guatu-selected"); });
      selected = id;
      var row = document.querySelector('.guatu-finding[data-id="' + id + '"]');
      if (row) row.classList.add("guatu-selected");
      if (shapes[id]) {
        shapes[id].setStyle({weight: 5});
        shapes[id].bringToFront();
        var bounds = shapes[id].getBounds();
        nearLabels.clearLayers();
        map.once("moveend", function () { labelNeighbours(bounds); });
        fit(bounds.pad(1.5), MAX_ZOOM);
      }
    }

    /* "登记问题" (register the finding as a problem of the ledger) or "已登记" with its number and status. */
    function problemSlot(p, feature) {
      var slot = el("div", "guatu-finding-problem");
      function shown(reg) {
        slot.textContent = "";
        var tag = el("a", "guatu-link guatu-registered", "已登记 Registered " + reg.number + " · " + reg.status);
        tag.href = "/problems";
        slot.appendChild(tag);
      }
      if (p.registered) { shown(p.registered); return slot; }
      var add = el("button", "guatu-secondary guatu-register-problem", "登记问题 Register a problem");
      add.type = "button";
      add.addEventListener("click", function (e) {
        e.stopPropagation();
        add.disabled = true;
        var body = {type: "边界问题", source: "边界检查", description: p.message_zh + "（" + p.codes.join("、") + "）",
                    finding_id: p.id, finding_geometry: feature.geometry};
        fetch(opts.api + "/problems", {method: "POST", body: JSON.stringify(body), credentials: "same-origin",
                                       headers: guatuDom.csrfHeaders({"Content-Type": "application/json"})})
          .then(function (r) { return r.json().then(function (d) { return {ok: r.ok, data: d}; }); })
          .then(function (out) {
            if (out.ok) shown({number: out.data.number, status: out.data.status});
            else { add.disabled = false; slot.appendChild(el("div", "guatu-bad", out.data.message)); }
          });
      });
      slot.appendChild(add);
      return slot;
    }

    function findingRow(p, bounds, feature) {
      var row = el("div", "guatu-finding guatu-" + p.severity);
      row.dataset.id = p.id;
      row.appendChild(el("div", "guatu-finding-head", (RULES[p.rule] || p.rule) +
        (p.area_m2 != null ? " · " + p.area_m2.toFixed(2) + " 平方米" : "")));
      row.appendChild(el("div", "guatu-why", p.message_zh));
      row.appendChild(el("div", "guatu-finding-id", p.id + " · " + p.message_en));
      if (bounds.isValid()) {
        var go = el("a", "guatu-link guatu-map-link", "在地图上查看 Open on the map ›");
        go.href = mapLink(bounds);
        go.title = "挂图页面定位到此处 the map page, at this place";
        go.addEventListener("click", function (e) { e.stopPropagation(); });
        row.appendChild(go);
      }
      row.appendChild(problemSlot(p, feature));
      row.addEventListener("click", function () { highlight(p.id); });
      return row;
    }

    function json(url) {
      return fetch(url).then(function (r) { return r.json().then(function (d) { return {ok: r.ok, data: d}; }); });
    }

    /* A check streamed as NDJSON lines: progress lines (told to ONPROGRESS) then its result or its error.
       Aborting SIGNAL (the page left, or 停止 pressed) closes the request: the server stops the check. */
    function streamed(url, onProgress, signal) {
      return fetch(url, {credentials: "same-origin", signal: signal}).then(function (r) {
        if (!r.ok || !r.body) return r.json().then(function (d) { return {ok: false, data: d}; });
        var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = "", out = null;
        function pump() {
          return reader.read().then(function (step) {
            if (step.value) buffer += decoder.decode(step.value, {stream: true});
            var lines = buffer.split("\n");
            buffer = lines.pop();
            lines.forEach(function (line) {
              if (!line.trim()) return;
              var record = JSON.parse(line);
              if (record.type === "progress") onProgress(record.done, record.total);
              else if (record.type === "result") out = {ok: true, data: record.body};
              else if (record.type === "error") out = {ok: false, data: record.body};
            });
            if (step.done) {
              return out || {ok: false, data: {code: "check_interrupted", message: "检查中断 the check ended early"}};
            }
            return pump();
          });
        }
        return pump();
      });
    }

    var Panel = L.Control.extend({
      options: {position: "topleft"},
      onAdd: function () {
        box = el("div", "guatu-upload guatu-checks");
        box.appendChild(el("div", "guatu-title-main", "边界检查 Boundary checks"));
        var back = el("a", "guatu-link", "← 返回地图 Back to the map");
        back.href = "/";
        box.appendChild(back);
        var pick = el("select");
        pick.name = "scope";
        opts.scopes.forEach(function (s) {
          var option = el("option", null, s.label);
          option.value = s.code;
          pick.appendChild(option);
        });
        var wrap = el("label", "guatu-field");
        wrap.appendChild(el("span", null, "范围 Scope"));
        wrap.appendChild(pick);
        box.appendChild(wrap);
        var run = el("button", "guatu-primary", "检查 Check");
        run.type = "button";
        run.name = "check";
        box.appendChild(run);
        var key = el("div", "guatu-checks-key");
        [["guatu-key-unit", "范围内单元 units"], ["guatu-key-involved", "涉及要素 features named"],
         ["guatu-key-error", "错误 error"], ["guatu-key-warning", "警告 warning"]].forEach(function (k) {
          var item = el("span", "guatu-key");
          item.appendChild(el("span", "guatu-key-swatch " + k[0]));
          item.appendChild(el("span", null, k[1]));
          key.appendChild(item);
        });
        box.appendChild(key);
        var stop = el("button", "guatu-secondary guatu-checks-stop", "停止 Stop");
        stop.type = "button";
        stop.name = "stop";
        stop.hidden = true;
        box.appendChild(stop);
        var bar = el("progress", "guatu-checks-progress");
        bar.hidden = true;
        box.appendChild(bar);
        var status = el("div", "guatu-upload-status");
        box.appendChild(status);
        var aborter = null;
        stop.addEventListener("click", function () { if (aborter) aborter.abort(); });
        var note = el("div", "guatu-checks-note");
        box.appendChild(note);
        var list = el("div", "guatu-findings");
        box.appendChild(list);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);

        run.addEventListener("click", function () {
          var scope = pick.value;
          var lv = levelOf(scope);
          run.disabled = true;
          status.className = "guatu-upload-status";
          status.textContent = "检查中… checking";
          note.textContent = "";
          list.textContent = "";
          found.clearLayers();
          shapes = {};
          rings = {};
          var summary = null;
          aborter = window.AbortController ? new AbortController() : null;
          stop.hidden = false;
          bar.hidden = false;
          bar.removeAttribute("value");  // indeterminate until the first count
          function progress(done, total) {
            if (!total) return;
            bar.max = total;
            bar.value = done;
            status.textContent = "检查中… checking: " + done.toLocaleString() + " / " + total.toLocaleString() +
              " 个要素 features (" + Math.floor(100 * done / total) + "%)";
          }
          streamed(opts.api + "/checks/stream?format=geojson" + (scope ? "&scope=" + encodeURIComponent(scope) : ""),
                   progress, aborter ? aborter.signal : undefined)
            .then(function (out) {
              if (!out.ok) {
                status.className = "guatu-upload-status guatu-bad";
                status.textContent = out.data.code + "：" + out.data.message;
                return null;
              }
              summary = out.data.summary;
              summary.listing = out.data.listed;
              var features = out.data.features;
              var codes = {};
              features.forEach(function (f) { f.properties.codes.forEach(function (c) { codes[c] = true; }); });
              var q = new URLSearchParams();
              if (scope) q.set("scope", scope);
              var named = Object.keys(codes).sort().slice(0, 500);
              if (named.length) q.set("codes", named.join(","));
              return json(opts.api + "/checks/context?" + q.toString()).then(function (ctx) {
                if (ctx.ok) drawContext(ctx.data, scope);
                else note.textContent = "底图未能加载 (context not loaded): " + ctx.data.message;
                if (ctx.ok && ctx.data.truncated) note.textContent = "单元或要素过多，只画出一部分 (too many to draw all)";
                return features;
              });
            }).then(function (features) {
              if (!features) return;
              var errors = summary.errors, warnings = summary.warnings;  // exact: every finding counted
              status.className = "guatu-upload-status " + (errors ? "guatu-bad" : "guatu-good");
              status.textContent = (lv ? lv.zh + " " + scope + "：" : "全部：") + "错误 " + errors + "，警告 " +
                warnings + (features.length ? "：点击一条可定位 (click one to zoom)" : "：边界无问题 (no findings)");
              var shown = summary.listing;
              if (shown && shown.truncated) {
                note.textContent = (note.textContent ? note.textContent + "；" : "") + "只列出前 " +
                  shown.listed.toLocaleString() + " 条，共 " + shown.total.toLocaleString() + " 条 (the first " +
                  shown.listed + " of " + shown.total + " findings are listed; the counts are exact)";
              }
              features.forEach(function (f) {
                var p = f.properties;
                var colour = COLOURS[p.severity];
                var shape = L.geoJSON(f, {
                  style: {color: colour, weight: 2, fillOpacity: 0.45, className: "guatu-found guatu-found-" + p.rule},
                  pointToLayer: function (_, latlng) { return L.circleMarker(latlng, {radius: 9, color: colour, className: "guatu-found"}); }
                });
                shape.on("click", function () { highlight(p.id); });
                var middle = shape.getBounds().isValid() ? shape.getBounds().getCenter() : null;
                if (middle) {
                  rings[p.id] = L.circleMarker(middle, {radius: 11, color: colour, weight: 3, fillOpacity: 0.15,
                    className: "guatu-found-ring"}).on("click", function () { highlight(p.id); });
                  found.addLayer(rings[p.id]);
                }
                shape.bindTooltip(text((RULES[p.rule] || p.rule) + (p.area_m2 != null ? " " + p.area_m2.toFixed(2) + " m²" : "")));
                found.addLayer(shape);
                shapes[p.id] = shape;
                list.appendChild(findingRow(p, shape.getBounds(), f));
              });
              var all = L.featureGroup([units, involved, found]);
              if (all.getLayers().length) fit(all.getBounds(), MAX_ZOOM);
              ringSmall();
            }).catch(function (err) {
              status.className = "guatu-upload-status guatu-bad";
              status.textContent = err.name === "AbortError" ? "已停止 stopped" : "失败 (failed): " + err.message;
            }).then(function () {
              run.disabled = false;
              stop.hidden = true;
              bar.hidden = true;
              aborter = null;
            });
        });
        return box;
      }
    });
    new Panel().addTo(map);
    window.guatuChecks.map = map;
  }

  window.guatuChecks = {start: start, map: null};
})();
