/* guatu 挂图 upload page: dry run, per-feature report, rejected features drawn, then commit. */
(function () {
  "use strict";

  var el = guatuDom.el, text = guatuDom.text;

  function labelled(text, control) {
    var wrap = el("label", "guatu-field");
    wrap.appendChild(el("span", null, text));
    wrap.appendChild(control);
    return wrap;
  }

  function select(name, options) {
    var node = el("select");
    node.name = name;
    options.forEach(function (o) {
      var option = el("option", null, o.label);
      option.value = o.value;
      node.appendChild(option);
    });
    return node;
  }

  function start(map, opts) {
    var drawn = L.featureGroup().addTo(map);
    var Panel = L.Control.extend({
      options: {position: "topleft"},
      onAdd: function () {
        var box = el("div", "guatu-upload");
        box.appendChild(el("div", "guatu-title-main", "上传调查数据 Upload survey data"));
        var back = el("a", "guatu-link", "← 返回地图 Back to the map");
        back.href = "/";
        box.appendChild(back);
        var form = el("form", "guatu-upload-form");
        var layer = select("layer", opts.layers.map(function (l) { return {value: l.id, label: l.zh + " " + l.en}; }));
        var crs = select("crs", opts.crs);
        var axis = select("axis", [{value: "xy", label: "经度/东坐标在前 (lon/E first)"},
                                   {value: "yx", label: "纬度/北坐标在前 (lat/N first, X=北)"}]);
        var mode = select("mode", [{value: "all-or-nothing", label: "全部通过才提交 (all or nothing)"},
                                   {value: "valid-only", label: "只提交通过的要素 (valid only)"}]);
        var file = el("input");
        file.type = "file";
        file.name = "file";
        file.accept = ".geojson,.json,.xlsx,.gpkg,.zip,.kml,.kmz,.csv,.txt,.gml,.gpx,.fgb,.dxf," +
          "application/geo+json,application/json," +
          "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
        var sourceLayer = select("source_layer", [{value: "", label: "（文件只有一个图层时不用选）(only one)"}]);
        var encoding = select("encoding", [{value: "", label: "自动判断 (detect)"},
                                           {value: "GBK", label: "GBK"}, {value: "UTF-8", label: "UTF-8"},
                                           {value: "GB18030", label: "GB18030"}, {value: "BIG5", label: "BIG5"}]);
        file.addEventListener("change", function () {  // another file: its layers are asked afresh
          sourceLayer.length = 1;
          sourceLayer.value = "";
        });
        var importMode = select("import_mode", [
          {value: "", label: "自动：有图形列为新增，否则更新 (auto)"},
          {value: "add", label: "新增导入 (add: new codes only)"},
          {value: "update", label: "更新导入 (update by code)"}]);
        var asked = new URLSearchParams(window.location.search).get("layer");
        if (asked && opts.layers.some(function (l) { return l.id === asked; })) layer.value = asked;
        var links = el("div", "guatu-upload-links");
        var template = el("a", "guatu-link guatu-template-link", "下载 Excel 模板 (template)");
        var geojsonTemplate = el("a", "guatu-link guatu-template-geojson", "GeoJSON 模板");
        var gpkgTemplate = el("a", "guatu-link guatu-template-gpkg", "GPKG 模板");
        var exported = el("a", "guatu-link guatu-export-link", "导出现有台账 (export the ledger)");
        function relink() {
          var base = opts.api + "/layers/" + encodeURIComponent(layer.value);
          template.href = base + "/template.xlsx";
          geojsonTemplate.href = base + "/template.geojson";
          gpkgTemplate.href = base + "/template.gpkg";
          exported.href = base + "/export.xlsx";
        }
        relink();
        layer.addEventListener("change", relink);
        [template, geojsonTemplate, gpkgTemplate, exported].forEach(function (a, n) {
          if (n) links.appendChild(text(" · "));
          links.appendChild(a);
        });
        [labelled("图层 Layer", layer), links, labelled("坐标系 CRS", crs), labelled("轴顺序 Axis", axis),
         labelled("提交方式 Mode", mode), labelled("Excel 导入方式 Import", importMode),
         labelled("文件 File（GeoJSON、.xlsx、GeoPackage、Shapefile .zip、KML/KMZ、CSV …）", file),
         labelled("文件中的图层 Layer in the file", sourceLayer),
         labelled("文字编码 Encoding（Shapefile/CSV）", encoding)].forEach(function (n) { form.appendChild(n); });
        var check = el("button", "guatu-button", "检查（试运行）Check (dry run)");
        check.type = "button";
        check.name = "check";
        var commit = el("button", "guatu-button guatu-primary", "提交 Commit");
        commit.type = "button";
        commit.name = "commit";
        commit.disabled = true;
        var mapping = el("div", "guatu-mapping");
        mapping.hidden = true;
        form.appendChild(mapping);
        form.appendChild(check);
        form.appendChild(commit);
        box.appendChild(form);
        var status = el("div", "guatu-upload-status");
        var report = el("div", "guatu-upload-report");
        box.appendChild(status);
        box.appendChild(report);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);

        /* The file's fields beside the layer's: a dropdown of targets each, the proposal preselected. */
        var KEEP = "@extra", DROP = "@drop";
        var inspected = null;  // the inspect answer for the file chosen, once read
        var unmapped = select("unmapped", [
          {value: "keep", label: "保留为其他属性 (keep as other attributes)"},
          {value: "drop", label: "不导入 (drop)"}]);

        function missingRequired() {
          var chosen = {};
          mapping.querySelectorAll("select.guatu-map-target").forEach(function (s) { chosen[s.value] = true; });
          return inspected.targets.filter(function (t) { return t.required && !chosen[t.name]; });
        }

        function refreshMissing() {
          var box = mapping.querySelector(".guatu-map-missing");
          var missing = missingRequired();
          box.textContent = missing.length ? "必填字段未对应 Required, not mapped: " +
            missing.map(function (t) { return t.zh + " " + t.en; }).join("、") : "必填字段均已对应 All required fields mapped";
          box.className = "guatu-map-missing " + (missing.length ? "guatu-bad" : "guatu-good");
          var counts = {};
          mapping.querySelectorAll("select.guatu-map-target").forEach(function (s) {
            if (s.value.charAt(0) !== "@" && s.value) counts[s.value] = (counts[s.value] || 0) + 1;
          });
          mapping.querySelectorAll("select.guatu-map-target").forEach(function (s) {
            s.classList.toggle("guatu-map-twice", counts[s.value] > 1);
          });
        }

        function showMapping(data) {
          inspected = data;
          mapping.textContent = "";
          if (!data.fields.length) { mapping.hidden = true; return; }
          mapping.hidden = false;
          mapping.appendChild(el("div", "guatu-map-title", "字段对应 Field mapping" +
            (data.remembered ? "（已按上次的选择 as last time）" : "") + " · " + data.count + " 个要素 features"));
          var table = el("table", "guatu-map-table");
          var head = el("tr");
          ["文件字段 File field", "示例 Samples", "导入为 Import as"].forEach(function (h) { head.appendChild(el("th", null, h)); });
          table.appendChild(head);
          data.fields.forEach(function (f) {
            var row = el("tr", "guatu-map-row");
            row.dataset.field = f.name;
            row.appendChild(el("td", "guatu-map-name", f.name));
            row.appendChild(el("td", "guatu-map-samples", f.samples.join(" | ")));
            var choices = [{value: "", label: "（未对应 unmapped）"}];
            data.targets.forEach(function (t) {
              choices.push({value: t.name, label: (t.required ? "*" : "") + t.zh + " " + t.en});
            });
            choices.push({value: DROP, label: "不导入 Drop"});
            choices.push({value: KEEP, label: "保留为其他属性 Keep as other attribute"});
            var target = select("target", choices);
            target.className = "guatu-map-target";
            target.setAttribute("aria-label", f.name);
            var proposed = data.proposed[f.name];
            target.value = proposed === null || proposed === undefined ? "" : (proposed === KEEP ? KEEP : proposed);
            target.addEventListener("change", refreshMissing);
            var cell = el("td");
            cell.appendChild(target);
            row.appendChild(cell);
            table.appendChild(row);
          });
          mapping.appendChild(table);
          mapping.appendChild(el("div", "guatu-map-missing"));
          mapping.appendChild(labelled("未对应的字段 Unmapped", unmapped));
          mapping.appendChild(el("div", "guatu-map-hint", "疑似个人信息（姓名、电话、身份证号）的字段不会保留为其他属性 " +
            "(fields that look personal are never kept as other attributes)"));
          refreshMissing();
        }

        function confirmedMapping() {
          var out = {};
          mapping.querySelectorAll("tr.guatu-map-row").forEach(function (row) {
            var value = row.querySelector("select").value;
            if (value === DROP) out[row.dataset.field] = null;
            else if (value) out[row.dataset.field] = value;
          });
          return out;
        }

        /* A file of several layers (GeoPackage, a zip of Shapefiles, KML folders): the refusal lists them. */
        function offerLayers(data) {
          var asked = data.code === "source_layer_required" && (data.errors || [])[0];
          if (!asked || !asked.details || !asked.details.layers) return;
          sourceLayer.length = 1;
          asked.details.layers.forEach(function (name) {
            var option = el("option", null, name);
            option.value = name;
            sourceLayer.appendChild(option);
          });
        }

        function inspect() {
          inspected = null;
          mapping.hidden = true;
          commit.disabled = true;
          if (!file.files.length) return;
          var body = new FormData();
          body.append("file", file.files[0]);
          status.textContent = "正在读取字段… (reading the fields)";
          status.className = "guatu-upload-status";
          var query = new URLSearchParams();
          if (sourceLayer.value) query.set("layer", sourceLayer.value);
          if (encoding.value) query.set("encoding", encoding.value);
          fetch(opts.api + "/layers/" + layer.value + "/uploads/inspect?" + query.toString(),
                {method: "POST", body: body, headers: guatuDom.csrfHeaders()})
            .then(function (r) { return r.json().then(function (data) { return {ok: r.ok, data: data}; }); })
            .then(function (res) {
              if (!res.ok) {
                offerLayers(res.data);
                status.textContent = "文件未通过 (file refused): " + res.data.code + " — " + res.data.message;
                status.className = "guatu-upload-status guatu-bad";
                return;
              }
              if (status.textContent.indexOf("正在读取字段") === 0) status.textContent = "";
              showMapping(res.data);
            })
            .catch(function (err) { status.textContent = "失败 (failed): " + err.message; });
        }
        file.addEventListener("change", inspect);
        layer.addEventListener("change", inspect);
        sourceLayer.addEventListener("change", inspect);
        encoding.addEventListener("change", inspect);

        function send(dryRun) {
          if (!file.files.length) {
            status.textContent = "请选择文件 (choose a file)";
            return;
          }
          var params = new URLSearchParams({axis: axis.value, mode: mode.value, dry_run: String(dryRun)});
          if (crs.value) params.set("crs", crs.value);
          if (importMode.value) params.set("import_mode", importMode.value);
          if (sourceLayer.value) params.set("layer", sourceLayer.value);
          if (encoding.value) params.set("encoding", encoding.value);
          var body = new FormData();
          body.append("file", file.files[0]);
          if (inspected && inspected.fields.length) {
            body.append("mapping", JSON.stringify(confirmedMapping()));
            body.append("unmapped", unmapped.value);
          }
          status.textContent = dryRun ? "正在检查… (checking)" : "正在提交… (committing)";
          check.disabled = commit.disabled = true;
          fetch(opts.api + "/layers/" + layer.value + "/uploads?" + params.toString(),
                {method: "POST", body: body, headers: guatuDom.csrfHeaders()})
            .then(function (r) { return r.json().then(function (data) { return {ok: r.ok, status: r.status, data: data}; }); })
            .then(function (res) { show(res, dryRun); })
            .catch(function (err) { status.textContent = "失败 (failed): " + err.message; })
            .then(function () { check.disabled = false; });
        }

        var COLOURS = {rejected: "#e11d48", new: "#16a34a", changed: "#d97706", unchanged: "#6b7280"};
        var LABELS = {rejected: "拒绝 rejected", new: "新增 new", changed: "修改 changed", unchanged: "未变 unchanged"};

        function show(res, dryRun) {
          var data = res.data;
          report.textContent = "";
          drawn.clearLayers();
          offerLayers(data);
          if (!data.report) {  // the whole file was refused, or the server is busy
            status.textContent = (res.status === 503 ? "服务器繁忙，请稍后重试 (server busy): " :
              "文件未通过 (file refused): ") + data.code + " — " + data.message;
            status.className = "guatu-upload-status guatu-bad";
            return;
          }
          var s = data.report.summary;
          status.className = "guatu-upload-status" + (s.rejected ? " guatu-bad" : " guatu-good");
          status.textContent = (dryRun ? "试运行 Dry run" : "上传 #" + data.id + " " + data.status) +
            "：共 " + s.total + "，新增 " + s.new + "，修改 " + s.changed + "，未变 " + s.unchanged + "，拒绝 " + s.rejected;
          (data.report.warnings || []).forEach(function (w) { report.appendChild(el("div", "guatu-warning", w.message)); });
          var read = data.report.file;  // a GeoPackage, Shapefile, KML, CSV …: how it was read
          if (read) {
            report.appendChild(el("div", "guatu-file-read", "文件 File：" + read.format +
              (read.layer ? "，图层 " + read.layer : "") + "，" + read.count + " 个要素" +
              (read.encoding ? "，编码 " + read.encoding + "（" + read.encoding_source + "）" : "") +
              (read.crs ? "，坐标系 " + read.crs : "")));
            (read.notes || []).forEach(function (n) { report.appendChild(el("div", "guatu-warning", n.message)); });
          }
          ((data.report.fields || {}).notes || []).forEach(function (n) { report.appendChild(el("div", "guatu-map-note", n)); });
          var table = el("table", "guatu-report-table");
          var overlaps = [];
          data.report.features.forEach(function (f) {
            var why = (f.problems || []).map(function (p) { return p.code + "：" + p.message; }).join("；");
            if (f.changed_fields) why = "改动 " + f.changed_fields.join("、") + (f.moved_m ? "，位移 " + f.moved_m + " m" : "");
            if (f.changes) {  // a ledger's row: each changed cell, old → new
              why = Object.keys(f.changes).map(function (k) {
                var c = f.changes[k];
                return ((data.report.labels || {})[k] || k) + "：" + (c[0] === null ? "（空）" : c[0]) + " → " + (c[1] === null ? "（空）" : c[1]);
              }).join("；");
            }
            var noted = (f.notes || []).map(function (n) { return n.message; }).join("；");
            if (noted) why = why ? why + "；" + noted : noted;  // overlaps, kept masked values, repairs…
            (f.notes || []).forEach(function (n) {  // an overlap with a stored feature or another of the file
              if (!n.geometry || n.code.indexOf("overlaps_") !== 0) return;
              var overlap = L.geoJSON(n.geometry, {
                style: {color: "#7c3aed", weight: 2, dashArray: "4 3", fillColor: "#7c3aed", fillOpacity: 0.45,
                        className: "guatu-overlap guatu-overlap-" + f.index}
              });
              overlap.bindTooltip(text("#" + f.index + " " + (f.key || "") + "：" + n.message));  // the file's text, never markup
              overlaps.push(overlap);
            });
            if (f.status !== "unchanged" || noted) {  // the table lists what will change, is refused or has notes
              var row = el("tr", "guatu-row-" + f.status);
              row.appendChild(el("td", null, f.row ? "第 " + f.row + " 行" : "#" + f.index));
              row.appendChild(el("td", null, f.key || f.id || ""));
              row.appendChild(el("td", null, LABELS[f.status] || f.status));
              row.appendChild(el("td", "guatu-why", why));
              table.appendChild(row);
            }
            if (f.geometry) {
              var colour = COLOURS[f.status] || "#6b7280";
              var cls = "guatu-feature guatu-feature-" + f.status + (f.status === "rejected" ? " guatu-rejected guatu-rejected-" + f.index : "");
              var shape = L.geoJSON(f.geometry, {
                style: {color: colour, weight: f.status === "rejected" ? 2 : 1, fillOpacity: f.status === "rejected" ? 0.3 : 0.15, className: cls},
                pointToLayer: function (_, latlng) {
                  return L.circleMarker(latlng, {radius: f.status === "rejected" ? 8 : 5, color: colour, className: cls});
                }
              });
              shape.bindTooltip(text("#" + f.index + " " + (f.key || "") + " " + (LABELS[f.status] || f.status) + (why ? "：" + why : "")));  // the file's text, never markup
              drawn.addLayer(shape);
              if (f.status === "rejected") shape.bringToFront();
            }
          });
          report.appendChild(table);
          overlaps.forEach(function (o) { drawn.addLayer(o); o.bringToFront(); });  // above the features
          if (drawn.getLayers().length) {
            map.fitBounds(drawn.getBounds(), {maxZoom: 18, paddingTopLeft: [500, 60], paddingBottomRight: [60, 60]});
          }
          commit.disabled = !(dryRun && s.new + s.changed > 0 && (mode.value === "valid-only" || !s.rejected));
        }

        check.addEventListener("click", function () { send(true); });
        commit.addEventListener("click", function () { send(false); });
        return box;
      }
    });
    new Panel().addTo(map);
  }

  window.guatuUpload = {start: start};
})();
