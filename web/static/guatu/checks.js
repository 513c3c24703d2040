/* guatu 挂图 checks page: pick a street, community or grid, list the boundary findings, click one to zoom. */
(function () {
  "use strict";

  var COLOURS = {error: "#dc2626", warning: "#d97706"};
  var RULES = {
    gap: "缝隙 gap", overlap: "重叠 overlap", outside_parent: "越出上级 outside parent",
    sliver: "碎片 sliver", invalid_geometry: "图形无效 invalid", duplicate_code: "编码重复 duplicate code",
    code_parent_mismatch: "编码与上级不符 code vs parent", numbering_order: "编号顺序 numbering",
    outside_frame: "不在网格内 outside grids", outside_own_frame: "越出所属网格 outside own grid",
    straddles_frames: "跨网格 straddles grids", attribute_location_mismatch: "属性与位置不符 attribute vs location",
    not_near_link: "未与宅基地相接 not at homestead", link_missing: "关联缺失 link missing",
    household_without_zone: "无责任区 no zone", no_children: "尚无下级 nothing inside"
  };

  var el = guatuDom.el, text = guatuDom.text;

  function start(map, opts) {
    var frame = L.featureGroup().addTo(map);
    var found = L.featureGroup().addTo(map);
    var shapes = {};
    var selected = null;

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
        map.fitBounds(bounds, {maxZoom: 19, paddingTopLeft: [460, 40], paddingBottomRight: [40, 40]});
      }
    }

    function drawFrame(scope) {
      frame.clearLayers();
      var layer = scope.length > 12 ? "grids" : (scope.length === 12 ? "grids" : "divisions");
      return fetch(opts.api + "/layers/" + layer + "/features?limit=10000")
        .then(function (r) { return r.json(); })
        .then(function (fc) {
          var prefix = scope.length > 12 ? scope.slice(0, 12) : scope;
          fc.features.filter(function (f) { return String(f.properties.code).indexOf(prefix) === 0; }).forEach(function (f) {
            var g = L.geoJSON(f, {style: {color: "#2563eb", weight: 1, fillOpacity: 0.04, className: "guatu-frame"}});
            g.bindTooltip(text(f.properties.code + " " + (f.properties.name || "")));  // names are text, never markup
            frame.addLayer(g);
          });
        });
    }

    var Panel = L.Control.extend({
      options: {position: "topleft"},
      onAdd: function () {
        var box = el("div", "guatu-upload guatu-checks");
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
        var status = el("div", "guatu-upload-status");
        box.appendChild(status);
        var list = el("div", "guatu-findings");
        box.appendChild(list);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);

        run.addEventListener("click", function () {
          var scope = pick.value;
          run.disabled = true;
          status.className = "guatu-upload-status";
          status.textContent = "检查中… checking";
          list.textContent = "";
          found.clearLayers();
          shapes = {};
          Promise.all([
            drawFrame(scope),
            fetch(opts.api + "/checks?format=geojson" + (scope ? "&scope=" + encodeURIComponent(scope) : ""))
              .then(function (r) { return r.json().then(function (d) { return {ok: r.ok, data: d}; }); })
          ]).then(function (res) {
            var out = res[1];
            if (!out.ok) {
              status.className = "guatu-upload-status guatu-bad";
              status.textContent = out.data.code + "：" + out.data.message;
              return;
            }
            var features = out.data.features;
            var errors = features.filter(function (f) { return f.properties.severity === "error"; }).length;
            status.className = "guatu-upload-status " + (errors ? "guatu-bad" : "guatu-good");
            status.textContent = "错误 " + errors + "，警告 " + (features.length - errors) +
              (features.length ? "：点击一条可定位 (click one to zoom)" : "：边界无问题 (no findings)");
            features.forEach(function (f) {
              var p = f.properties;
              var colour = COLOURS[p.severity];
              var shape = L.geoJSON(f, {
                style: {color: colour, weight: 2, fillOpacity: 0.45, className: "guatu-found guatu-found-" + p.rule},
                pointToLayer: function (_, latlng) { return L.circleMarker(latlng, {radius: 9, color: colour, className: "guatu-found"}); }
              });
              shape.on("click", function () { highlight(p.id); });
              shape.bindTooltip(text((RULES[p.rule] || p.rule) + (p.area_m2 != null ? " " + p.area_m2.toFixed(2) + " m²" : "")));
              found.addLayer(shape);
              shapes[p.id] = shape;
              var row = el("div", "guatu-finding guatu-" + p.severity);
              row.dataset.id = p.id;
              row.appendChild(el("div", "guatu-finding-head", (RULES[p.rule] || p.rule) +
                (p.area_m2 != null ? " · " + p.area_m2.toFixed(2) + " 平方米" : "")));
              row.appendChild(el("div", "guatu-why", p.message_zh));
              row.appendChild(el("div", "guatu-finding-id", p.id + " · " + p.message_en));
              row.addEventListener("click", function () { highlight(p.id); });
              list.appendChild(row);
            });
            var all = L.featureGroup([frame, found]);
            if (all.getLayers().length && all.getBounds().isValid()) {
              map.fitBounds(all.getBounds(), {paddingTopLeft: [460, 40], paddingBottomRight: [40, 40]});
            }
          }).catch(function (err) {
            status.className = "guatu-upload-status guatu-bad";
            status.textContent = "失败 (failed): " + err.message;
          }).then(function () { run.disabled = false; });
        });
        return box;
      }
    });
    new Panel().addTo(map);
    window.guatuChecks.map = map;
  }

  window.guatuChecks = {start: start, map: null};
})();
