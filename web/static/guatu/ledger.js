/* guatu 挂图: ledger tables (台账). A Tabulator grid of a layer's rows, paged and sorted on the
   server (/api/layers/{id}/rows) under the map's filter; cells edited by those allowed (PATCH with
   If-Match); the columns shown and their order kept per user (/api/me/preferences). Used by the
   ledger page (guatuLedger.page) and docked under the map (guatuLedger.dock). Values become text
   nodes only. */
(function () {
  "use strict";

  var el = guatuDom.el;
  var OUTLINE = {color: "#f59e0b", weight: 4, fill: false, dashArray: null};
  var SIZES = [25, 50, 100, 200, 500];
  var me = null;

  /* fetch with the session cookie, resolving to {status, ok, body, etag} whatever the status. */
  function call(url, opts) {
    opts = opts || {};
    var headers = {Accept: "application/json, application/geo+json"};
    var method = (opts.method || "GET").toUpperCase();
    if (method !== "GET") {
      guatuDom.csrfHeaders(headers);
      headers["Content-Type"] = "application/json";
    }
    Object.keys(opts.headers || {}).forEach(function (k) { headers[k] = opts.headers[k]; });
    return fetch(url, {method: method, headers: headers, credentials: "same-origin", body: opts.body})
      .then(function (r) {
        return r.text().then(function (text) {
          var body = null;
          try { body = text ? JSON.parse(text) : null; } catch (e) { body = {message: text}; }
          return {status: r.status, ok: r.ok, body: body, etag: r.headers.get("ETag")};
        });
      });
  }

  function whoami(api) {
    if (!me) me = call(api + "/me").then(function (r) { return r.ok ? r.body : null; });
    return me;
  }

  /* A value as the grid shows it: codes as text with their names, 亩 to 2 decimals, never markup. */
  function shown(col, value) {
    if (value === null || value === undefined || value === "") return "";
    if (col.decimals !== null && col.decimals !== undefined) return Number(value).toFixed(col.decimals);
    if (col.kind === "stamp") return String(value).replace("T", " ").slice(0, 19);
    if (col.labels && Object.prototype.hasOwnProperty.call(col.labels, value)) return value + " " + col.labels[value];
    return String(value);
  }

  function editorOf(col) {
    if (col.kind === "enum") {
      var values = (col.required ? [] : [""]).concat(col.choices || []);
      return {editor: "list", editorParams: {values: values}};
    }
    if (col.kind === "int" || col.kind === "float") return {editor: "number"};
    if (col.kind === "date") return {editor: "date"};
    return {editor: "input"};
  }

  function problemText(body) {
    if (!body) return "保存失败 (save failed)";
    var problems = body.problems || [body];
    return problems.map(function (p) { return p.message || p.code; }).join("；");
  }

  /* A grid of LAYER's rows in CONTAINER. CFG: api, layer (web/ledger.py ledger_layer), query()
     (the filter as a query string), onSelect(row data), pageSize, mapLink (add a "show on map" column). */
  function grid(container, cfg) {
    var self = {};
    var layer = cfg.layer;
    var exact = null;        // the exact count, once /rows/count has answered for the current query
    var countedFor = null;   // the query it counted
    var pending = null;      // a row to select when its page has loaded
    var user = null;
    self.layer = layer;

    var bar = el("div", "ledger-bar");
    var counter = el("span", "ledger-count", "…");
    var columnsButton = el("button", "guatu-button ledger-columns-button", "列 Columns");
    columnsButton.type = "button";
    bar.appendChild(counter);
    bar.appendChild(columnsButton);
    var notice = el("div", "ledger-notice");
    notice.hidden = true;
    var chooser = el("div", "ledger-chooser");
    chooser.hidden = true;
    var holder = el("div", "ledger-grid");
    container.appendChild(bar);
    container.appendChild(notice);
    container.appendChild(chooser);
    container.appendChild(holder);
    self.bar = bar;

    var prefKey = "ledger.columns." + layer.id;

    function say(text, retry) {
      notice.textContent = "";
      notice.hidden = !text;
      if (!text) return;
      notice.appendChild(el("span", null, text));
      if (retry) {
        var again = el("button", "guatu-button ledger-retry", "重试 Retry");
        again.type = "button";
        again.addEventListener("click", function () { say(""); retry(); });
        notice.appendChild(again);
      }
      var close = el("button", "guatu-button ledger-notice-close", "×");
      close.type = "button";
      close.addEventListener("click", function () { say(""); });
      notice.appendChild(close);
    }
    self.say = say;

    function rowsUrl(params) {
      var q = new URLSearchParams(cfg.query());
      Object.keys(params).forEach(function (k) { if (params[k] !== undefined && params[k] !== null) q.set(k, params[k]); });
      return cfg.api + "/layers/" + layer.id + "/rows?" + q.toString();
    }

    function flatten(row) {
      var data = {};
      Object.keys(row.properties).forEach(function (k) { data[k] = row.properties[k]; });
      data.id = row.id;
      data.__version = row.version;
      data.__bbox = row.bbox;
      return data;
    }

    function countAll() {
      var q = cfg.query();
      if (countedFor === q) return;
      countedFor = q;
      var size = self.table.getPageSize();
      call(cfg.api + "/layers/" + layer.id + "/rows/count?" + new URLSearchParams(q + "&size=" + size).toString())
        .then(function (r) {
          if (!r.ok || countedFor !== q) return;
          exact = r.body.count;
          counter.textContent = "共 " + exact + " " + layer.counter + " (rows)";
          self.table.setMaxPage(Math.max(1, Math.ceil(exact / self.table.getPageSize())));
        });
    }

    function request(url, config, params) {
      var sort = params.sort && params.sort[0];
      var args = {page: params.page, size: params.size};
      if (sort) { args.sort = sort.field; args.dir = sort.dir; }
      holder.dataset.loading = "1";
      return call(rowsUrl(args)).then(function (r) {
        delete holder.dataset.loading;
        if (!r.ok) {
          say(problemText(r.body));
          return {last_page: 1, data: []};
        }
        var body = r.body;
        var q = cfg.query();
        if (countedFor !== q) exact = null;
        if (body.count !== null) {
          exact = body.count;
          countedFor = q;
          counter.textContent = "共 " + body.count + " " + layer.counter + " (rows)";
        } else if (exact === null) {
          counter.textContent = body.count_cap + "+ " + layer.counter + "，计数中… (counting)";
          setTimeout(countAll, 0);
        }
        holder.dataset.page = String(body.page);
        var last = exact !== null ? Math.max(1, Math.ceil(exact / body.size)) : body.last_page;
        return {last_page: last, data: body.data.map(flatten)};
      });
    }

    function columnsFor(saved) {
      var personalOk = user && user.layers[layer.id] && user.layers[layer.id].personal;
      var editable = user && user.layers[layer.id] && user.layers[layer.id].edit;
      var cols = layer.columns.map(function (col) {
        var def = {
          title: col.zh + " " + col.en,
          field: col.name,
          headerSort: !(col.personal && !personalOk),
          formatter: function (cell) { return document.createTextNode(shown(col, cell.getValue())); },
          hozAlign: col.kind === "area" || col.kind === "int" || col.kind === "float" ? "right" : "left",
          headerTooltip: col.en + (col.personal && !personalOk ? "（个人信息，已打码 masked）" : "")
        };
        if (editable && !col.read_only && !(col.personal && !personalOk)) {
          var ed = editorOf(col);
          def.editor = ed.editor;
          if (ed.editorParams) def.editorParams = ed.editorParams;
          def.cssClass = "ledger-editable";
        }
        return def;
      });
      if (cfg.mapLink) {
        cols.unshift({
          title: "地图 Map", field: "__bbox", headerSort: false, width: 96,
          formatter: function (cell) {
            var b = cell.getValue() || [0, 0, 0, 0];
            var a = el("a", "ledger-map-link", "在地图上查看");
            a.title = "Show on map";
            a.href = "/#18/" + ((b[1] + b[3]) / 2).toFixed(6) + "/" + ((b[0] + b[2]) / 2).toFixed(6);
            return a;
          }
        });
      }
      if (saved && Array.isArray(saved.order)) {
        var rank = {};
        saved.order.forEach(function (name, i) { rank[name] = i; });
        cols.sort(function (a, b) {
          var ra = a.field in rank ? rank[a.field] : (a.field === "__bbox" ? -1 : 1000);
          var rb = b.field in rank ? rank[b.field] : (b.field === "__bbox" ? -1 : 1000);
          return ra - rb;
        });
      }
      var hidden = saved && Array.isArray(saved.hidden) ? saved.hidden : [];
      cols.forEach(function (c) { if (hidden.indexOf(c.field) >= 0) c.visible = false; });
      return cols;
    }

    var saveTimer = null;
    function saveColumns() {
      clearTimeout(saveTimer);
      saveTimer = setTimeout(function () {
        var order = [], hidden = [];
        self.table.getColumns().forEach(function (c) {
          var f = c.getField();
          if (f === "__bbox") return;
          order.push(f);
          if (!c.isVisible()) hidden.push(f);
        });
        container.dataset.saving = "1";
        call(cfg.api + "/me/preferences/" + prefKey, {method: "PUT", body: JSON.stringify({order: order, hidden: hidden})})
          .then(function (r) {
            delete container.dataset.saving;
            if (r.ok) container.dataset.saved = String((Number(container.dataset.saved) || 0) + 1);
            if (!r.ok) say("列设置未保存 (columns not saved)：" + problemText(r.body));
          });
      }, 300);
    }

    function buildChooser() {
      chooser.textContent = "";
      chooser.appendChild(el("div", "ledger-chooser-head", "显示的列（拖动表头可调整顺序） Columns shown (drag a header to reorder)"));
      self.table.getColumns().forEach(function (c) {
        var f = c.getField();
        if (f === "__bbox") return;
        var line = el("label", "ledger-chooser-line");
        var box = el("input");
        box.type = "checkbox";
        box.checked = c.isVisible();
        box.dataset.field = f;
        box.addEventListener("change", function () {
          if (box.checked) c.show(); else c.hide();
          saveColumns();
        });
        line.appendChild(box);
        line.appendChild(el("span", null, c.getDefinition().title));
        chooser.appendChild(line);
      });
    }
    columnsButton.addEventListener("click", function () {
      chooser.hidden = !chooser.hidden;
      if (!chooser.hidden) buildChooser();
    });

    /* Save one edited cell: PATCH with the row's version; 412 shows the current value, 422 the message. */
    function save(cell) {
      var row = cell.getRow(), data = row.getData(), field = cell.getField();
      var value = cell.getValue();
      if (value === "") value = null;
      var props = {};
      props[field] = value;
      var element = cell.getElement();
      element.classList.remove("ledger-cell-error", "ledger-cell-conflict");
      element.classList.add("ledger-cell-saving");
      return call(cfg.api + "/layers/" + layer.id + "/features/" + data.id, {
        method: "PATCH",
        headers: {"If-Match": '"' + data.__version + '"'},
        body: JSON.stringify({type: "Feature", properties: props})
      }).then(function (r) {
        element.classList.remove("ledger-cell-saving");
        if (r.ok) {
          var fresh = flatten({id: r.body.id, version: r.body.version, bbox: data.__bbox, properties: r.body.properties});
          row.update(fresh);
          cell.getElement().classList.add("ledger-cell-saved");
          say("");
          if (cfg.onSaved) cfg.onSaved(layer.id);
          return;
        }
        if (r.status === 412) {
          return call(cfg.api + "/layers/" + layer.id + "/features/" + data.id).then(function (now) {
            if (!now.ok) { say(problemText(now.body)); return; }
            var mine = value;
            row.update(flatten({id: now.body.id, version: now.body.version, bbox: data.__bbox, properties: now.body.properties}));
            var current = now.body.properties[field];
            cell.getElement().classList.add("ledger-cell-conflict");
            say("他人已修改此行 (changed by someone else)：现值 current “" + shown({}, current) + "”。重试将以您的值 “" +
                shown({}, mine) + "” 覆盖 (retry to save yours)", function () {
              cell.setValue(mine === null ? "" : mine);  // fires cellEdited again, with the new version
            });
          });
        }
        var message = problemText(r.body);
        cell.restoreOldValue();
        var target = cell.getElement();
        target.classList.add("ledger-cell-error");
        target.title = message;
        say(message);
      });
    }

    var ready = whoami(cfg.api).then(function (who) {
      user = who;
      return call(cfg.api + "/me/preferences/" + prefKey);
    }).then(function (pref) {
      var saved = pref.ok ? pref.body : null;
      self.table = new Tabulator(holder, {
        height: cfg.height || "100%",
        layout: "fitDataFill",
        index: "id",
        columns: columnsFor(saved),
        movableColumns: true,
        selectableRows: 1,
        pagination: true,
        paginationMode: "remote",
        paginationSize: cfg.pageSize || 50,
        paginationSizeSelector: SIZES,
        paginationCounter: "pages",
        sortMode: "remote",
        ajaxURL: cfg.api + "/layers/" + layer.id + "/rows",
        ajaxRequestFunc: request,
        placeholder: "没有记录 No rows",
        locale: "zh",
        langs: {zh: {pagination: {
          first: "首页", first_title: "First", last: "末页", last_title: "Last", prev: "上一页", prev_title: "Previous",
          next: "下一页", next_title: "Next", page_size: "每页 Rows", counter: {showing: "", of: "/", rows: "行", pages: "页"}
        }}}
      });
      self.table.on("rowClick", function (e, row) {
        if (e.target && e.target.closest && e.target.closest("a")) return;  // the map link goes to the map page
        if (cfg.onSelect) cfg.onSelect(row.getData());
      });
      self.table.on("cellEditing", function (cell) {  // a list editor keeps the click from the row: select here too
        var row = cell.getRow();
        if (!row.isSelected()) {
          self.table.deselectRow();
          row.select();
          if (cfg.onSelect) cfg.onSelect(row.getData());
        }
      });
      self.table.on("cellEdited", save);
      self.table.on("columnMoved", saveColumns);
      self.table.on("dataLoaded", function () {
        holder.dataset.loaded = String((Number(holder.dataset.loaded) || 0) + 1);
        if (pending !== null) {
          var id = pending;
          pending = null;
          self.select(id, true);
        }
      });
      return self;
    });

    /* Reload from the first page (the filter or the view changed). */
    self.reload = function () {
      if (self.table) self.table.setPage(1);
    };

    /* Select row ID if on this page, else load the page holding it (?at=); say so if the filter leaves it out. */
    self.select = function (id, loaded) {
      var table = self.table;
      var row = table.getRow(id);
      if (row) {
        table.deselectRow();
        table.selectRow(id);
        table.scrollToRow(id, "center", false);
        return true;
      }
      if (loaded) {
        say("此要素不在当前筛选的台账中 (not among the rows the filter keeps)");
        return false;
      }
      var sort = table.getSorters()[0];
      var args = {at: id, size: table.getPageSize()};
      if (sort) { args.sort = sort.field; args.dir = sort.dir; }
      call(rowsUrl(args)).then(function (r) {
        if (!r.ok) { say(problemText(r.body)); return; }
        pending = id;
        table.setPage(r.body.page);
      });
      return false;
    };
    return ready;
  }


  /* Outline row ROW of LAYER on MAP (fetched whole: its shape is not in the row) and frame its box. */
  function frame(map, api, layerId, row, state) {
    var b = row.__bbox;
    if (b) map.fitBounds([[b[1], b[0]], [b[3], b[2]]], {maxZoom: 18, animate: false, padding: [20, 20]});
    if (state.outline) { map.removeLayer(state.outline); state.outline = null; }
    return call(api + "/layers/" + layerId + "/features/" + row.id).then(function (r) {
      if (!r.ok) return;
      if (state.outline) map.removeLayer(state.outline);
      if (!map.getPane("guatuLedgerOutline")) map.createPane("guatuLedgerOutline").style.zIndex = 640;  // above the tiles
      state.outline = L.geoJSON(r.body, {
        pane: "guatuLedgerOutline",
        style: function () { return OUTLINE; },
        pointToLayer: function (f, latlng) { return L.circleMarker(latlng, L.extend({radius: 10}, OUTLINE)); },
        interactive: false
      }).addTo(map);
      map.getContainer().dataset.framed = layerId + "/" + row.id;
    });
  }

  function button(text, cls) {
    var b = el("button", "guatu-button " + (cls || ""), text);
    b.type = "button";
    return b;
  }

  function link(text, href, cls) {
    var a = el("a", "guatu-button ledger-link " + (cls || ""), text);
    a.href = href;
    return a;
  }

  /* The GIS formats a layer's ledger is also exported in (api/routes/exports.py), and the QGIS project. */
  var FORMATS = [
    ["geojson", "", "GeoJSON"], ["csv", "", "CSV (WKT, 经纬度)"], ["kml", "", "KML (奥维/Google 地球)"],
    ["gpkg", "", "GeoPackage"], ["shp.zip", "", "Shapefile (UTF-8)"], ["shp.zip", "encoding=gbk", "Shapefile (GBK, ArcGIS 旧版)"]
  ];

  /* A small menu of the other formats beside 导出 Excel; set(query) points every link at the filter. */
  function formatsMenu(api, layerId) {
    var menu = el("details", "ledger-formats");
    menu.appendChild(el("summary", "guatu-button ledger-link", "其他格式 More formats ▾"));
    var list = el("div", "ledger-formats-list");
    menu.appendChild(list);
    var links = FORMATS.map(function (f) {
      var a = el("a", "ledger-format ledger-format-" + f[0].replace(".", "-") + (f[1] ? "-gbk" : ""), f[2]);
      a.setAttribute("download", "");
      list.appendChild(a);
      return [a, f];
    });
    var qgis = el("a", "ledger-format ledger-format-qgis", "QGIS 工程 project (.qgz)");
    qgis.href = api + "/qgis/project.qgz";
    qgis.title = "在 QGIS 中打开：图层经 OGC API 读取，需在 QGIS 认证中设置 API 令牌 (needs your API token in QGIS)";
    list.appendChild(qgis);
    function set(query) {
      links.forEach(function (pair) {
        var q = [pair[1][1], query].filter(Boolean).join("&");
        pair[0].href = api + "/layers/" + layerId + "/export." + pair[1][0] + (q ? "?" + q : "");
      });
    }
    set("");
    return {element: menu, set: set};
  }

  /* The filter bar of the ledger page: one control per filter the layer declares (as the map's panel). */
  function filterBar(box, layer, onChange) {
    var state = {};
    if (!layer.filter) return function () { return ""; };
    layer.filter.filters.forEach(function (f) {
      var line = el("label", "ledger-filter");
      line.appendChild(el("span", "ledger-filter-name", f.zh));
      var input;
      if (f.kind === "before") {
        input = el("input", "ledger-f-" + f.param);
        input.type = "date";
        input.title = f.zh + "早于 before";
      } else {
        input = el("select", "ledger-f-" + f.param);
        var any = el("option", null, "全部 any");
        any.value = "";
        input.appendChild(any);
        f.choices.forEach(function (c) {
          var o = el("option", null, c.label);
          o.value = c.value;
          input.appendChild(o);
        });
      }
      input.dataset.param = f.param;
      input.addEventListener("change", function () {
        state[f.param] = input.value;
        onChange();
      });
      line.appendChild(input);
      box.appendChild(line);
    });
    return function () {
      var q = new URLSearchParams();
      Object.keys(state).forEach(function (k) { if (state[k]) q.set(k, state[k]); });
      return q.toString();
    };
  }

  /* The ledger page: a layer switcher, its filter, export and import links, the grid, and a small map. */
  function page(map, opts) {
    document.body.classList.add("ledger-page");
    var layer = opts.layers.filter(function (x) { return x.id === opts.layer; })[0];
    var box = el("div", "ledger-panel");
    document.body.appendChild(box);
    var head = el("div", "ledger-head");
    head.appendChild(el("span", "guatu-title-main", "台账 Ledger"));
    var pick = el("select", "ledger-layer");
    opts.layers.forEach(function (x) {
      var o = el("option", null, x.title.zh + " " + x.title.en);
      o.value = x.id;
      pick.appendChild(o);
    });
    pick.value = layer.id;
    pick.addEventListener("change", function () { window.location.href = "/ledger/" + encodeURIComponent(pick.value); });
    head.appendChild(pick);
    head.appendChild(link("地图 Map", "/", "ledger-to-map"));
    box.appendChild(head);
    var filters = el("div", "ledger-filters");
    box.appendChild(filters);
    var actions = el("div", "ledger-actions");
    var exportLink = link("导出 Excel Export", "#", "ledger-export");
    actions.appendChild(exportLink);
    var formats = formatsMenu(opts.api, layer.id);
    actions.appendChild(formats.element);
    actions.appendChild(link("下载模板 Template", opts.api + "/layers/" + layer.id + "/template.xlsx", "ledger-template"));
    actions.appendChild(link("导入 Excel Import", "/upload?layer=" + encodeURIComponent(layer.id), "ledger-import"));
    box.appendChild(actions);
    var gridBox = el("div", "ledger-body");
    box.appendChild(gridBox);
    var holder = null;
    var query = filterBar(filters, layer, function () {
      exportLink.href = opts.api + "/layers/" + layer.id + "/export.xlsx" + (query() ? "?" + query() : "");
      formats.set(query());
      if (holder) holder.reload();
    });
    exportLink.href = opts.api + "/layers/" + layer.id + "/export.xlsx";
    var state = {};
    setTimeout(function () { map.invalidateSize(); }, 0);
    grid(gridBox, {
      api: opts.api, layer: layer, query: query, mapLink: true,
      onSelect: function (row) { frame(map, opts.api, layer.id, row, state); }
    }).then(function (g) { holder = g; window.guatuLedger.current = g; });
  }

  /* The ledger docked under the map: the layer the filter panel shows, its filter, rows in view by default. */
  function dock(map, opts) {
    var byId = {};
    opts.layers.forEach(function (x) { byId[x.id] = x; });
    var box = el("div", "ledger-dock");
    box.hidden = true;
    document.body.appendChild(box);
    var head = el("div", "ledger-dock-head");
    var title = el("span", "ledger-dock-title", "");
    var inView = el("input", "ledger-in-view");
    inView.type = "checkbox";
    inView.checked = true;
    var viewLabel = el("label", "ledger-in-view-label");
    viewLabel.appendChild(inView);
    viewLabel.appendChild(el("span", null, "仅视野内 In view"));
    var open = link("台账页 Full page", "#", "ledger-full");
    var close = button("收起 Close", "ledger-dock-close");
    [title, viewLabel, open, close].forEach(function (n) { head.appendChild(n); });
    box.appendChild(head);
    var body = el("div", "ledger-dock-body");
    box.appendChild(body);
    var current = null, building = null, state = {}, timer = null;
    var quietUntil = 0;  // framing a row, or a popup panning, must not reload the rows in view
    function quiet() { quietUntil = Date.now() + 1200; }

    function activeLayer() {
      var f = window.guatu.shownFilter && window.guatu.shownFilter();
      var id = f ? f.layer() : null;
      return byId[id] ? id : opts.layers[0].id;
    }
    function query() {
      var f = window.guatu.shownFilter && window.guatu.shownFilter();
      var q = new URLSearchParams(f && current ? f.query(current.layer.id) : "");
      if (inView.checked) {
        var b = map.getBounds();
        q.set("bbox", [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(7); }).join(","));
      }
      return q.toString();
    }
    function build() {
      var id = activeLayer();
      if (current && current.layer.id === id) { current.reload(); return; }
      body.textContent = "";
      current = null;
      var layer = byId[id];
      title.textContent = "台账 " + layer.title.zh + " " + layer.title.en;
      open.href = "/ledger/" + encodeURIComponent(id);
      var holder = el("div", "ledger-dock-grid");
      body.appendChild(holder);
      building = grid(holder, {
        api: opts.api, layer: layer, query: query, height: "100%", pageSize: 50,
        onSelect: function (row) { quiet(); frame(map, opts.api, layer.id, row, state); },
        onSaved: function (layerId) { if (window.guatu.reload) window.guatu.reload(layerId); }
      });
      building.then(function (g) { current = g; g.query = query; window.guatuLedger.current = g; });
    }
    function shown() { return !box.hidden; }
    function toggle(on) {
      box.hidden = !on;
      document.body.classList.toggle("ledger-docked", on);
      map.invalidateSize();
      toggleButton.classList.toggle("ledger-on", on);
      if (on) build();
      else if (state.outline) { map.removeLayer(state.outline); state.outline = null; }
    }
    var toggleButton = null;
    var Control = L.Control.extend({
      options: {position: "topleft"},
      onAdd: function () {
        toggleButton = button("台账 Ledger", "ledger-toggle");
        toggleButton.title = "在地图下方显示台账表格 (show the ledger under the map)";
        L.DomEvent.disableClickPropagation(toggleButton);
        toggleButton.addEventListener("click", function () { toggle(box.hidden); });
        return toggleButton;
      }
    });
    new Control().addTo(map);
    close.addEventListener("click", function () { toggle(false); });
    inView.addEventListener("change", function () { if (current) current.reload(); });
    map.on("guatu:filter", function () { if (shown()) build(); });
    map.on("moveend", function () {
      if (!shown() || !inView.checked || !current || Date.now() < quietUntil) return;
      clearTimeout(timer);
      timer = setTimeout(function () { current.reload(); }, 250);
    });
    /* A shape clicked on the map: select its row (loading the page that holds it). */
    window.guatu.onPopup(function (layerOpts, feature) {
      if (!shown() || !current || layerOpts.id !== current.layer.id || feature.id === undefined) return;
      quiet();
      current.select(feature.id);
    });
  }

  window.guatuLedger = {grid: grid, call: call, shown: shown, page: page, dock: dock, current: null};
})();
