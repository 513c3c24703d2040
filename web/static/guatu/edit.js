/* guatu 挂图: editing on the map page, for those the server lets edit (GET /api/me says which
   layers). Attribute forms are built from the layers' descriptions (GET /api/layers), shapes are
   edited with Leaflet-Geoman snapping to the neighbours in view, every save carries the version it
   started from (If-Match) and a conflict shows both versions side by side. History, restore and
   the map as of a past date read the server's change log. Feature text only ever becomes text
   nodes; no inline handlers (addEventListener only). */
(function () {
  "use strict";

  // Geoman handles only the layers this module hands it (pmIgnore: false), never the map's own.
  if (window.L && L.PM) L.PM.setOptIn(true);

  var el = guatuDom.el;
  function narrow() { return window.matchMedia("(max-width: 640px)").matches; }  // asked when built (see map.js)
  var SNAP = {snappable: true, snapDistance: 20, snapVertex: true, snapSegment: true};
  var SHAPE = {color: "#1d4ed8", weight: 3, fillColor: "#60a5fa", fillOpacity: 0.25, dashArray: null};
  var BAD = {color: "#dc2626", weight: 4, dashArray: "6 4"};
  var NEAR = {color: "#6b21a8", weight: 1.5, fill: true, fillOpacity: 0.05, dashArray: "4 3"};
  var PICKED = {color: "#ea580c", weight: 3, fillColor: "#fb923c", fillOpacity: 0.45, dashArray: null};
  var OPS = {insert: "新增 insert", update: "修改 update", "delete": "删除 delete"};
  var NUMBERS = {"int": "1", "float": "any", number: "any"};

  /* The one state of the module. */
  var state = {
    map: null,
    opts: null,        // from web/maps.py: api, login, layers [{id, split}]
    me: null,          // GET /api/me
    described: {},     // layer id -> its description (GET /api/layers)
    split: {},         // layer id -> split and merge offered
    asOf: "",          // the date the map shows ("" for now)
    past: {},          // layer id -> {layer, shown, refresh} while the map shows a past date
    session: null,     // the edit, split or merge under way
    panel: null,       // the side panel: {box, body, onClose}
    bar: null,         // the toolbar's status line
    pending: 0,        // requests under way (page tests wait for 0)
    ready: false
  };

  /* ---------- talking to the server ---------- */

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split(";") : [];
    for (var i = 0; i < parts.length; i++) {
      var part = parts[i].trim();
      if (part.indexOf(name + "=") === 0) return decodeURIComponent(part.slice(name.length + 1));
    }
    return "";
  }

  /* fetch with the session cookie; writes carry the CSRF token and say they send JSON. */
  function guatuFetch(url, opts) {
    opts = L.extend({credentials: "same-origin"}, opts || {});
    var headers = L.extend({Accept: "application/json, application/geo+json"}, opts.headers || {});
    var method = (opts.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      headers["X-CSRF-Token"] = cookie("guatu_csrf");
      headers["Content-Type"] = "application/json";
    }
    opts.headers = headers;
    return fetch(url, opts);
  }

  /* Resolve to {status, ok, body, etag} whatever the status; the body parsed when it is JSON. */
  function call(url, opts) {
    state.pending += 1;
    return guatuFetch(url, opts).then(function (r) {
      return r.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = {message: text}; }
        return {status: r.status, ok: r.ok, body: body, etag: r.headers.get("ETag")};
      });
    }, function (err) {
      return {status: 0, ok: false, body: {message: "网络错误 network error: " + err.message}, etag: null};
    }).then(function (answer) {
      state.pending -= 1;
      return answer;
    });
  }

  function send(method, url, data, version) {
    var headers = version === null || version === undefined ? {}
      : {"If-Match": version === "*" ? "*" : "\"" + version + "\""};
    return call(url, {method: method, headers: headers, body: data === undefined ? undefined : JSON.stringify(data)});
  }

  function featuresUrl(layerId) { return state.opts.api + "/layers/" + encodeURIComponent(layerId) + "/features"; }

  /* The feature with its version (from the body, else the ETag). */
  function readFeature(layerId, fid) {
    return call(featuresUrl(layerId) + "/" + fid).then(function (r) {
      if (!r.ok) throw new Error(messageOf(r));
      var feature = r.body;
      if (feature.version === undefined && r.etag) feature.version = Number(r.etag.replace(/^W\//, "").replace(/"/g, ""));
      return feature;
    });
  }

  function messageOf(r) {
    if (r.status === 401) return "登录已过期，请重新登录 (signed out: log in again)";
    return (r.body && r.body.message) || ("HTTP " + r.status);
  }

  /* The problems of an error body (api/errors.py error_body): its list, or the body itself. */
  function problemsOf(body) {
    if (!body) return [];
    if (body.errors && body.errors.length) return body.errors;
    return [body];
  }

  /* ---------- who is signed in ---------- */

  function editable(id) {
    var rights = state.me && state.me.layers && state.me.layers[id];
    return Boolean(rights && rights.edit && state.described[id] && window.guatu.options(id));
  }
  function canEdit(id) { return !state.asOf && editable(id); }
  function seesPersonal(id) {
    var rights = state.me && state.me.layers && state.me.layers[id];
    return Boolean(rights && rights.personal);
  }

  function start(map, opts) {
    state.map = map;
    state.opts = opts;
    if (L.PM && !map.pm) {  // opted in: the map folium made needs Geoman's handler given by hand
      map.options.pmIgnore = false;
      L.PM.reInitLayer(map);
    }
    if (map.pm) map.pm.setLang("zh");
    opts.layers.forEach(function (layer) { state.split[layer.id] = layer.split; });
    ["guatu-edit-near", "guatu-edit-shape"].forEach(function (name, i) {
      if (!map.getPane(name)) map.createPane(name).style.zIndex = String(560 + 10 * i);
    });
    window.guatu.onPopup(popupActions);
    call(opts.api + "/me").then(function (r) {
      if (!r.ok) {
        badge(null);
        state.ready = true;
        return null;
      }
      state.me = r.body;
      badge(r.body.user);
      var mine = opts.layers.filter(function (layer) {
        var rights = state.me.layers && state.me.layers[layer.id];
        return rights && rights.edit;
      });
      if (!mine.length || !map.pm) { state.ready = true; return null; }  // no rights, or Geoman not installed
      return call(opts.api + "/layers").then(function (d) {
        (d.ok && d.body ? d.body : []).forEach(function (desc) { state.described[desc.id] = desc; });
        toolbar();
        state.ready = true;
      });
    });
  }

  /* Top right: the user's name and role, log out, and the map as of a date. */
  function badge(user) {
    var Badge = L.Control.extend({
      options: {position: "topright"},
      onAdd: function () {
        var box = el("div", "guatu-user");
        if (!user) {
          var login = el("a", "guatu-link guatu-login", "登录 Log in");
          login.href = state.opts.login + "?next=" + encodeURIComponent(window.location.pathname + window.location.hash);
          box.appendChild(login);
          return box;
        }
        var who = el("div", "guatu-user-who");
        who.appendChild(el("span", "guatu-user-name", user.display_name || user.username));
        who.appendChild(el("span", "guatu-user-role", user.role_zh || user.role));
        var area = user.area_name || [user.area_level, user.area].filter(Boolean).join(" ");
        if (area) who.appendChild(el("span", "guatu-user-area", area));
        var out = el("button", "guatu-button guatu-logout", "退出 Log out");
        out.type = "button";
        out.addEventListener("click", logout);
        who.appendChild(out);
        box.appendChild(who);
        box.appendChild(asOfControl());
        L.DomEvent.disableClickPropagation(box);
        return box;
      }
    });
    var control = new Badge().addTo(state.map);
    var corner = control.getContainer().parentNode;
    corner.insertBefore(control.getContainer(), corner.firstChild);  // above the layer switcher
  }

  function logout() {
    send("POST", state.opts.api + "/logout", {}).then(function () { window.location.assign(state.opts.login); });
  }

  /* ---------- the toolbar: add a feature ---------- */

  function shapesOf(desc) {
    var types = desc.geometry_types || [];
    var out = [];
    if (types.some(function (t) { return /Polygon$/.test(t); })) out.push(["Polygon", "面 polygon"]);
    if (types.indexOf("Point") >= 0) out.push(["CircleMarker", "点 point"]);
    if (types.some(function (t) { return /LineString$/.test(t); })) out.push(["Line", "线 line"]);
    return out;
  }

  function toolbar() {
    var ids = state.opts.layers.map(function (l) { return l.id; }).filter(editable);
    if (!ids.length) return;
    var Bar = L.Control.extend({
      options: {position: "topleft"},
      onAdd: function () {
        var box = el("div", "guatu-edit-bar");
        var head = el("div", "guatu-edit-bar-head", "编辑 Edit");
        box.appendChild(head);
        var pick = el("select", "guatu-edit-layer");
        pick.title = "新增到哪个图层 (layer to add to)";
        ids.forEach(function (id) {
          var desc = state.described[id];
          var option = el("option", null, desc.title.zh + " " + desc.title.en);
          option.value = id;
          pick.appendChild(option);
        });
        box.appendChild(pick);
        var buttons = el("span", "guatu-edit-add");
        box.appendChild(buttons);
        function fill() {
          buttons.textContent = "";
          shapesOf(state.described[pick.value]).forEach(function (shape) {
            var add = el("button", "guatu-button guatu-add guatu-add-" + shape[0].toLowerCase(), "新增 Add（" + shape[1] + "）");
            add.type = "button";
            add.addEventListener("click", function () { draw(pick.value, shape[0]); });
            buttons.appendChild(add);
          });
        }
        pick.addEventListener("change", fill);
        fill();
        state.bar = el("div", "guatu-edit-status");
        box.appendChild(state.bar);
        if (narrow()) {
          box.classList.add("guatu-folded");
          head.textContent = "编辑 Edit ▸";
        }
        head.addEventListener("click", function () {
          var folded = box.classList.toggle("guatu-folded");
          head.textContent = "编辑 Edit " + (folded ? "▸" : "▾");
        });
        L.DomEvent.disableClickPropagation(box);
        return box;
      }
    });
    new Bar().addTo(state.map);
  }

  function say(text, bad) {
    if (!state.bar) return;
    state.bar.textContent = text || "";
    state.bar.className = "guatu-edit-status" + (bad ? " guatu-bad" : "");
  }

  /* ---------- the side panel (a sheet at the bottom of a phone) ---------- */

  function closePanel() {
    var panel = state.panel;
    if (!panel) return;
    state.panel = null;
    panel.box.remove();
    if (panel.onClose) panel.onClose();
  }

  /* A panel in place of the one open (whose onClose is not run: what it showed goes on here). */
  function openPanel(title, cls, onClose) {
    if (state.panel) state.panel.onClose = null;
    closePanel();
    var box = el("div", "guatu-edit-panel " + cls);
    var head = el("div", "guatu-edit-head");
    var name = el("span", "guatu-edit-title", title);
    head.appendChild(name);
    var fold = el("button", "guatu-edit-fold", "▾");
    fold.type = "button";
    fold.title = "收起/展开 fold";
    fold.addEventListener("click", function () {
      fold.textContent = box.classList.toggle("guatu-folded") ? "▸" : "▾";
    });
    head.appendChild(fold);
    var shut = el("button", "guatu-edit-close", "×");
    shut.type = "button";
    shut.title = "关闭 close";
    head.appendChild(shut);
    box.appendChild(head);
    var body = el("div", "guatu-edit-body");
    box.appendChild(body);
    state.map.getContainer().appendChild(box);
    L.DomEvent.disableClickPropagation(box);
    L.DomEvent.disableScrollPropagation(box);
    var panel = {box: box, body: body, onClose: onClose, title: name};
    shut.addEventListener("click", function () { if (state.panel === panel) closePanel(); });
    state.panel = panel;
    return panel;
  }

  /* Buttons ASK → "sure?" with yes/no in their place; YES runs DO. */
  function confirmIn(holder, ask, sure, yes, action) {
    var button = el("button", "guatu-button " + ask[1], ask[0]);
    button.type = "button";
    holder.appendChild(button);
    button.addEventListener("click", function () {
      button.hidden = true;
      var box = el("span", "guatu-confirm", sure + " ");
      var ok = el("button", "guatu-button guatu-confirm-yes", yes);
      ok.type = "button";
      var no = el("button", "guatu-button guatu-confirm-no", "取消 Cancel");
      no.type = "button";
      box.appendChild(ok);
      box.appendChild(no);
      holder.appendChild(box);
      no.addEventListener("click", function () { box.remove(); button.hidden = false; });
      ok.addEventListener("click", function () { box.remove(); button.hidden = false; action(); });
    });
    return button;
  }

  /* ---------- popups: the buttons of a feature ---------- */

  function popupActions(opts, feature, box) {
    if (!canEdit(opts.id) || feature.id === undefined || feature.id === null) return;
    var bar = el("div", "guatu-edit-actions");
    function button(text, cls, action) {
      var b = el("button", "guatu-button " + cls, text);
      b.type = "button";
      b.addEventListener("click", function () { action(opts.id, feature); });
      bar.appendChild(b);
    }
    button("编辑 Edit", "guatu-edit-open", edit);
    button("历史 History", "guatu-history-open", history);
    if (state.split[opts.id]) {
      button("分割 Split", "guatu-split-open", split);
      button("合并 Merge", "guatu-merge-open", merge);
    }
    var said = el("div", "guatu-edit-said");
    confirmIn(bar, ["删除 Delete", "guatu-delete"], "确定删除？", "确定删除 Delete", function () {
      remove(opts.id, feature, said);
    });
    box.appendChild(bar);
    box.appendChild(said);
  }

  function remove(layerId, feature, said) {
    said.textContent = "删除中… deleting";
    readFeature(layerId, feature.id).then(function (current) {
      return send("DELETE", featuresUrl(layerId) + "/" + feature.id, undefined, current.version);
    }).then(function (r) {
      if (!r.ok) throw new Error(r.status === 412 ? "他人刚修改过此要素，请重新打开 (changed meanwhile: open it again)" : messageOf(r));
      state.map.closePopup();
      window.guatu.reload(layerId);
      say("已删除 Deleted #" + feature.id + " ");
      var undo = el("button", "guatu-button guatu-deleted-history", "历史与恢复 History, restore");
      undo.type = "button";
      undo.addEventListener("click", function () { history(layerId, feature); });
      if (state.bar) state.bar.appendChild(undo);
    }).catch(function (err) {
      said.textContent = err.message;
      said.className = "guatu-edit-said guatu-bad";
    });
  }

  /* ---------- neighbours: snapped to while drawing, picked for a merge ---------- */

  /* Draw LAYERID's features in view (but SKIP) as a layer Geoman snaps to; PICK makes them clickable. */
  function neighbours(layerId, skip, pick) {
    var map = state.map;
    var group = L.geoJSON(null, {
      pane: "guatu-edit-near",
      interactive: Boolean(pick),
      pmIgnore: true,
      snapIgnore: false,
      style: function (f) { return L.extend({className: "guatu-near guatu-near-" + f.id}, NEAR); },
      filter: function (f) { return f.id !== skip; },
      pointToLayer: function (f, latlng) {
        return L.circleMarker(latlng, {pane: "guatu-edit-near", radius: 5, interactive: Boolean(pick), pmIgnore: true,
                                       snapIgnore: false, className: "guatu-near guatu-near-" + f.id});
      },
      onEachFeature: function (f, layer) { if (pick) layer.on("click", function () { pick(f, layer); }); }
    }).addTo(map);
    var near = {group: group, count: 0, loading: null};
    function load() {
      var b = map.getBounds();
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(7); });
      near.loading = call(featuresUrl(layerId) + "?bbox=" + bbox.join(",") + "&limit=5000").then(function (r) {
        if (!r.ok || !map.hasLayer(group)) return;
        var kept = {};
        group.eachLayer(function (layer) { kept[layer.feature.id] = true; });
        r.body.features.forEach(function (f) { if (!kept[f.id]) group.addData(f); });
        near.count = group.getLayers().length;
      });
      return near.loading;
    }
    near.stop = function () { map.off("moveend", load); group.remove(); };
    map.on("moveend", load);
    load();
    return near;
  }

  /* ---------- a session: one feature being edited (or drawn) ---------- */

  function endSession() {
    var s = state.session;
    if (!s) return;
    state.session = null;
    clearTimeout(s.timer);
    state.map.getContainer().classList.remove("guatu-drawing");
    state.map.pm.disableDraw();
    if (s.near) s.near.stop();
    if (s.shape) s.shape.remove();
    if (s.marks) s.marks.remove();
    if (s.extra) s.extra.remove();
    state.map.off("pm:create", s.onCreate);
  }

  function begin(kind, layerId) {
    endSession();
    closePanel();
    state.map.closePopup();
    var s = {kind: kind, layer: layerId, desc: state.described[layerId], checks: 0, client: {}, server: {}, timer: null};
    state.session = s;
    state.map.getContainer().classList.add("guatu-drawing");  // clicks reach the drawing, not the map's features
    return s;
  }

  function drawOptions() {
    return L.extend({}, SNAP, {
      pathOptions: L.extend({pane: "guatu-edit-shape", pmIgnore: false}, SHAPE),
      templineStyle: {color: SHAPE.color}, hintlineStyle: {color: SHAPE.color, dashArray: "5 5"},
      panes: {layerPane: "guatu-edit-shape", vertexPane: "markerPane", markerPane: "markerPane"}
    });
  }

  /* Draw a new feature of LAYERID (SHAPE: a Geoman shape name), snapping to its neighbours in view. */
  function draw(layerId, shape) {
    if (state.asOf) return;
    var s = begin("new", layerId);
    var map = state.map;
    s.near = neighbours(layerId, null, null);
    var panel = openPanel("新增 New " + s.desc.title.zh + " " + s.desc.title.en, "guatu-draw-panel", endSession);
    panel.body.appendChild(el("p", "guatu-edit-hint",
      shape === "CircleMarker" ? "在地图上点击放置 click the map to place it" :
        "在地图上逐点点击，点击第一个点结束；靠近相邻要素的顶点或边时自动吸附 " +
        "(click each corner, click the first to finish; corners snap to the neighbours' vertices and edges)"));
    s.onCreate = function (e) {
      if (state.session !== s) return;
      map.off("pm:create", s.onCreate);
      var layer = e.layer;
      layer.remove();
      var geometry = layer.toGeoJSON(false).geometry;  // false: the snapped coordinates, not rounded
      openForm(s, {type: "Feature", id: null, version: null, properties: {}, geometry: geometry});
      s.shapeChanged = true;
      check();
    };
    map.on("pm:create", s.onCreate);
    s.near.loading.then(function () { if (state.session === s) map.pm.enableDraw(shape, drawOptions()); });
  }

  /* Edit feature FEATURE of LAYERID: its shape with vertex snapping and its attribute form. */
  function edit(layerId, feature) {
    var s = begin("edit", layerId);
    readFeature(layerId, feature.id).then(function (current) {
      if (state.session !== s) return;
      s.near = neighbours(layerId, current.id, null);
      openForm(s, current);
    }).catch(function (err) { endSession(); say(err.message, true); });
  }

  /* The editable copy of a feature's shape, drawn above the map (the one Geoman edits). */
  function shapeOf(s, geometry) {
    if (s.shape) s.shape.remove();
    s.shape = L.geoJSON({type: "Feature", properties: {}, geometry: geometry}, {
      pane: "guatu-edit-shape",
      pmIgnore: false,
      style: function () { return SHAPE; },
      pointToLayer: function (f, latlng) {
        return L.circleMarker(latlng, L.extend({pane: "guatu-edit-shape", pmIgnore: false, radius: 8}, SHAPE));
      }
    }).addTo(state.map);
    s.leaf = s.shape.getLayers()[0];
    s.leaf.pm.enable(L.extend({}, SNAP, {draggable: s.leaf instanceof L.CircleMarker}));
    s.leaf.on("pm:edit pm:dragend pm:markerdragend pm:vertexremoved", function () {
      if (state.session !== s) return;
      s.shapeChanged = true;
      later();
    });
  }

  function geometryOf(s) {
    return s.leaf ? s.leaf.toGeoJSON(false).geometry : null;
  }

  /* ---------- the attribute form ---------- */

  function fieldsOf(desc) { return desc.fields || []; }

  function asText(value) { return value === null || value === undefined ? "" : String(value); }

  function readValue(f, control) {
    var v = control.value;
    if (v === "") return null;
    if (NUMBERS[f.kind] && !isNaN(Number(v))) return Number(v);
    return v;
  }

  function control(f, value) {
    var input;
    if (f.choices && f.choices.length) {
      input = el("select", "guatu-input");
      var none = el("option", null, f.required ? "— 请选择 choose —" : "— 未填 none —");
      none.value = "";
      input.appendChild(none);
      f.choices.forEach(function (c) {
        var v = typeof c === "object" ? c.value : c;
        var option = el("option", null, typeof c === "object" && c.label ? c.label : v);
        option.value = v;
        input.appendChild(option);
      });
      if (value !== null && value !== undefined && !f.choices.some(function (c) { return (c.value || c) === value; })) {
        var odd = el("option", null, String(value));  // a stored value no longer among the choices
        odd.value = String(value);
        input.appendChild(odd);
      }
    } else {
      input = el("input", "guatu-input");
      input.type = f.kind === "date" ? "date" : NUMBERS[f.kind] ? "number" : "text";
      if (NUMBERS[f.kind]) input.step = NUMBERS[f.kind];
      if (f.max_length) input.maxLength = f.max_length;
      if (f.pattern_zh) input.placeholder = f.pattern_zh;
      input.autocomplete = "off";
    }
    input.value = asText(value);
    return input;
  }

  var patterns = {};
  function pattern(source) {
    if (!(source in patterns)) {
      try { patterns[source] = new RegExp(source); } catch (e) { patterns[source] = null; }  // a Python-only pattern: the server checks it
    }
    return patterns[source];
  }

  /* What the page itself can tell about VALUE of field F (the server says the rest). */
  function clientProblem(f, value) {
    if (value === null) return f.required && !f.read_only ? "必填 required" : "";
    var text = String(value);
    if (f.max_length && text.length > f.max_length) return "最多 " + f.max_length + " 个字符 (at most " + f.max_length + " characters)";
    if (NUMBERS[f.kind] && typeof value !== "number") return "应为数字 (a number)";
    if (f.pattern && typeof value === "string") {
      var re = pattern(f.pattern);
      if (re && !re.test(value)) return "格式不符：" + (f.pattern_zh || f.pattern) + " (does not match " + f.pattern + ")";
    }
    return "";
  }

  function openForm(s, feature) {
    var desc = s.desc;
    s.fid = feature.id;
    s.version = feature.version;
    s.original = feature.properties || {};
    s.values = {};
    s.inputs = {};
    s.problems = {};
    s.client = {};
    s.server = {};
    s.shapeChanged = false;
    shapeOf(s, feature.geometry);
    var title = (s.fid ? "编辑 Edit " : "新增 New ") + desc.title.zh + " " + desc.title.en +
      (s.fid ? " #" + s.fid + (s.version !== undefined && s.version !== null ? " · 版本 v" + s.version : "") : "");
    var panel = openPanel(title, "guatu-form-panel", endSession);
    s.panel = panel;
    var general = el("div", "guatu-edit-problems");
    panel.body.appendChild(general);
    s.general = general;
    var form = el("form", "guatu-edit-form");
    form.noValidate = true;
    fieldsOf(desc).forEach(function (f) {
      var row = el("div", "guatu-edit-row");
      row.dataset.field = f.name;
      var label = el("label", "guatu-edit-label");
      var id = "guatu-edit-" + f.name;
      label.htmlFor = id;
      label.appendChild(el("span", "guatu-edit-zh", f.zh));
      if (f.required) {
        var star = el("span", "guatu-required", "*");
        star.title = "必填 required";
        label.appendChild(star);
      }
      label.appendChild(el("small", "guatu-edit-en", f.en));
      row.appendChild(label);
      var value = s.original[f.name];
      s.values[f.name] = value === undefined ? null : value;
      var input = control(f, s.values[f.name]);
      input.id = id;
      input.name = f.name;
      if (f.read_only) {
        input.disabled = true;
        row.classList.add("guatu-read-only");
        input.title = "由系统填写 filled in by the system";
      } else if (f.personal && s.fid && !seesPersonal(s.layer)) {
        input.disabled = true;  // shown masked: what is not seen is not overwritten
        row.classList.add("guatu-read-only");
        input.title = "个人信息已打码，无权修改 masked personal data: not yours to change";
      }
      input.addEventListener("input", function () { typed(s, f, input); });
      input.addEventListener("change", function () { typed(s, f, input); });
      row.appendChild(input);
      var problem = el("div", "guatu-problem");
      problem.setAttribute("aria-live", "polite");
      row.appendChild(problem);
      s.inputs[f.name] = input;
      s.problems[f.name] = problem;
      form.appendChild(row);
    });
    var noteRow = el("div", "guatu-edit-row guatu-edit-note-row");
    var noteLabel = el("label", "guatu-edit-label");
    noteLabel.appendChild(el("span", "guatu-edit-zh", "修改说明"));
    noteLabel.appendChild(el("small", "guatu-edit-en", "Note (optional)"));
    noteLabel.htmlFor = "guatu-edit-note";
    var note = el("textarea", "guatu-input guatu-edit-note");
    note.id = "guatu-edit-note";
    note.rows = 2;
    note.maxLength = 500;
    noteRow.appendChild(noteLabel);
    noteRow.appendChild(note);
    form.appendChild(noteRow);
    s.note = note;
    var actions = el("div", "guatu-edit-buttons");
    var save = el("button", "guatu-button guatu-save", "保存 Save");
    save.type = "submit";
    var cancel = el("button", "guatu-button guatu-cancel", "取消 Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", closePanel);
    actions.appendChild(save);
    actions.appendChild(cancel);
    form.appendChild(actions);
    form.addEventListener("submit", function (e) { e.preventDefault(); submit(s); });
    panel.body.appendChild(form);
    s.form = form;
    s.saveButton = save;
  }

  function typed(s, f, input) {
    var value = readValue(f, input);
    // A blur's "change" after the keystrokes changes nothing: the problems shown stay put, and the
    // button being clicked does not move away under the pointer.
    if (value === s.values[f.name] && f.name in s.client) return;
    s.values[f.name] = value;
    s.client[f.name] = clientProblem(f, s.values[f.name]);
    delete s.server[f.name];  // the server's word was on the old value: asked again below
    showProblem(s, f.name);
    later();
  }

  function showProblem(s, name) {
    var box = s.problems[name];
    if (!box) return;
    var said = [s.client[name], (s.server[name] || []).join("；")].filter(Boolean);
    box.textContent = said.join("；");
    box.parentNode.classList.toggle("guatu-has-problem", said.length > 0);
  }

  /* Ask the server about the feature as it stands, half a second after the last keystroke or drag. */
  function later() {
    var s = state.session;
    if (!s || !s.form) return;
    clearTimeout(s.timer);
    s.timer = setTimeout(check, 500);
  }

  function declared(s, props) {
    var out = {};
    fieldsOf(s.desc).forEach(function (f) { if (props[f.name] !== undefined) out[f.name] = props[f.name]; });
    return out;
  }

  function wholeFeature(s) {
    var body = {type: "Feature", properties: declared(s, s.values), geometry: geometryOf(s)};
    Object.keys(body.properties).forEach(function (k) { if (body.properties[k] === null) delete body.properties[k]; });
    if (s.fid) body.id = s.fid;
    return body;
  }

  function check() {
    var s = state.session;
    if (!s || !s.form) return;
    var mine = ++s.checks;
    s.form.dataset.checking = "1";
    send("POST", featuresUrl(s.layer) + "/check", wholeFeature(s)).then(function (r) {
      if (state.session !== s || mine !== s.checks) return;
      delete s.form.dataset.checking;
      if (r.ok) {
        completed(s, (r.body && r.body.properties) || {});
        serverProblems(s, []);
      } else if (r.status === 422) {
        serverProblems(s, problemsOf(r.body));
      } else {
        serverProblems(s, [{message: "检查未完成 check failed: " + messageOf(r), where: {}}]);
      }
    });
  }

  /* Fill the fields the server completes (the grid and community a shape lies in) when the user
     cannot or did not fill them. */
  function completed(s, props) {
    fieldsOf(s.desc).forEach(function (f) {
      var value = props[f.name];
      if (value === undefined || value === null) return;
      if (!f.read_only && s.values[f.name] !== null) return;
      if (s.values[f.name] === value) return;
      s.values[f.name] = value;
      s.inputs[f.name].value = asText(value);
      s.client[f.name] = "";
      showProblem(s, f.name);
    });
  }

  /* Put each of the server's PROBLEMS next to its field, on the shape, or at the top. */
  function serverProblems(s, problems) {
    s.server = {};
    s.general.textContent = "";
    var onShape = [];
    problems.forEach(function (p) {
      var where = p.where || {};
      var field = where.field ? String(where.field).replace(/^properties\./, "") : "";
      if (field && s.inputs[field]) {
        (s.server[field] = s.server[field] || []).push(p.message);
      } else if (field === "geometry" || /^geometry/.test(field) || where.location) {
        onShape.push(p);
      } else {
        s.general.appendChild(el("div", "guatu-problem guatu-problem-general", p.message));
      }
    });
    Object.keys(s.problems).forEach(function (name) { showProblem(s, name); });
    shapeProblems(s, onShape);
  }

  /* Geometry problems: the shape outlined in red, the message on it, a dot where the fault lies. */
  function shapeProblems(s, problems) {
    if (s.marks) s.marks.remove();
    s.marks = null;
    if (!s.leaf) return;
    if (s.leaf.unbindTooltip) s.leaf.unbindTooltip();
    if (s.leaf.setStyle) s.leaf.setStyle(problems.length ? BAD : SHAPE);
    s.panel.box.classList.toggle("guatu-shape-bad", problems.length > 0);
    if (!problems.length) return;
    var text = problems.map(function (p) { return p.message; }).join("；");
    s.leaf.bindTooltip(el("span", "guatu-geometry-problem", "图形问题 shape: " + text),
      {permanent: true, direction: "top", className: "guatu-geometry-tip"}).openTooltip();
    s.marks = L.layerGroup().addTo(state.map);
    problems.forEach(function (p) {
      var at = p.where && p.where.location;
      if (at && at.length === 2 && isFinite(at[0]) && isFinite(at[1])) {
        L.circleMarker([at[1], at[0]], {pane: "guatu-edit-shape", radius: 7, color: "#dc2626", fillOpacity: 0.8, interactive: false})
          .addTo(s.marks);
      }
    });
    s.general.appendChild(el("div", "guatu-problem guatu-problem-general guatu-problem-shape", "图形 Shape：" + text));
  }

  function changedFields(s) {
    var out = {};
    fieldsOf(s.desc).forEach(function (f) {
      if (f.read_only || s.inputs[f.name].disabled) return;
      var before = s.original[f.name] === undefined ? null : s.original[f.name];
      if (asText(before) !== asText(s.values[f.name])) out[f.name] = s.values[f.name];
    });
    return out;
  }

  function submit(s) {
    if (state.session !== s) return;
    var blocked = false;
    fieldsOf(s.desc).forEach(function (f) {
      s.client[f.name] = clientProblem(f, s.values[f.name]);
      showProblem(s, f.name);
      if (s.client[f.name]) blocked = true;
    });
    if (blocked) {
      s.general.textContent = "";
      s.general.appendChild(el("div", "guatu-problem guatu-problem-general", "请先更正标出的字段 (fix the fields marked first)"));
      return;
    }
    var note = s.note.value.trim();
    var request;
    if (s.fid) {
      var body = {type: "Feature", properties: changedFields(s)};
      if (s.shapeChanged) body.geometry = geometryOf(s);
      if (!Object.keys(body.properties).length && !s.shapeChanged) {
        s.general.textContent = "";
        s.general.appendChild(el("div", "guatu-edit-said", "没有修改 nothing changed"));
        return;
      }
      if (note) body.note = note;
      request = send("PATCH", featuresUrl(s.layer) + "/" + s.fid, body, s.version);
    } else {
      var created = wholeFeature(s);
      if (note) created.note = note;
      request = send("POST", featuresUrl(s.layer), created);
    }
    s.saveButton.disabled = true;
    request.then(function (r) {
      if (state.session !== s) return;
      s.saveButton.disabled = false;
      if (r.ok) return saved(s, r.body);
      if (r.status === 412) return conflict(s, (r.body && r.body.current) || null);
      if (r.status === 422) {
        serverProblems(s, problemsOf(r.body));
        s.general.insertBefore(el("div", "guatu-problem guatu-problem-general guatu-not-saved",
          "未保存：请更正标出的问题 (not saved: fix the problems marked)"), s.general.firstChild);
        return;
      }
      s.general.textContent = "";
      s.general.appendChild(el("div", "guatu-problem guatu-problem-general", "未保存 not saved: " + messageOf(r)));
    });
  }

  function saved(s, feature) {
    closePanel();  // ends the session
    window.guatu.reload(s.layer);
    say("已保存 Saved " + s.desc.title.zh + " #" + feature.id + (feature.version ? " v" + feature.version : ""));
  }

  /* ---------- 412: both versions side by side ---------- */

  function shown(f, value) {
    if (value === null || value === undefined || value === "") return "—";
    return String(value);
  }

  function conflict(s, current) {
    s.form.hidden = true;
    var box = el("div", "guatu-conflict");
    box.appendChild(el("div", "guatu-conflict-head",
      "版本冲突：此要素已被他人修改" + (current && current.version ? "（当前为 v" + current.version + "）" : "") +
      " Version conflict: someone saved this feature after you opened it"));
    if (!current) {
      box.appendChild(el("div", "guatu-problem", "服务器没有给出当前版本 (the server sent no current version)"));
      s.panel.body.appendChild(box);
      return;
    }
    var table = el("table", "guatu-conflict-table");
    var head = el("tr");
    ["字段 Field", "我的 Yours", "当前 Stored"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    var theirs = current.properties || {};
    fieldsOf(s.desc).forEach(function (f) {
      var mine = s.values[f.name];
      var stored = theirs[f.name] === undefined ? null : theirs[f.name];
      var tr = el("tr", asText(mine) !== asText(stored) ? "guatu-differs" : null);
      tr.dataset.field = f.name;
      var th = el("th", null, f.zh);
      th.title = f.en;
      tr.appendChild(th);
      tr.appendChild(el("td", "guatu-mine", shown(f, mine)));
      tr.appendChild(el("td", "guatu-theirs", shown(f, stored)));
      table.appendChild(tr);
    });
    var sameShape = JSON.stringify(geometryOf(s)) === JSON.stringify(current.geometry);
    var shapeRow = el("tr", sameShape ? null : "guatu-differs");
    shapeRow.dataset.field = "geometry";
    shapeRow.appendChild(el("th", null, "图形 Shape"));
    shapeRow.appendChild(el("td", "guatu-mine", s.shapeChanged ? "已修改 changed" : "未改 as opened"));
    shapeRow.appendChild(el("td", "guatu-theirs", sameShape ? "相同 same" : "不同 differs（虚线 dashed）"));
    table.appendChild(shapeRow);
    box.appendChild(table);
    if (!sameShape) {  // the stored shape beside mine
      if (s.extra) s.extra.remove();
      s.extra = L.geoJSON(current, {pane: "guatu-edit-near", interactive: false, pmIgnore: true,
        style: function () { return {color: "#ea580c", weight: 3, dashArray: "6 6", fillOpacity: 0}; }}).addTo(state.map);
    }
    var buttons = el("div", "guatu-edit-buttons");
    var theirsButton = el("button", "guatu-button guatu-take-theirs", "以当前版本为准 Take theirs");
    theirsButton.type = "button";
    theirsButton.addEventListener("click", function () {
      box.remove();
      if (s.extra) { s.extra.remove(); s.extra = null; }
      openForm(s, current);  // the stored version, to edit again from there
      say("已载入当前版本 loaded the stored version v" + current.version);
    });
    var mineButton = el("button", "guatu-button guatu-keep-mine", "用我的覆盖 Overwrite with mine");
    mineButton.type = "button";
    mineButton.addEventListener("click", function () {
      box.remove();
      if (s.extra) { s.extra.remove(); s.extra = null; }
      s.form.hidden = false;
      s.version = current.version;  // my changes, on top of the version now stored
      submit(s);
    });
    buttons.appendChild(theirsButton);
    buttons.appendChild(mineButton);
    box.appendChild(buttons);
    s.panel.body.insertBefore(box, s.panel.body.firstChild);
    s.panel.body.scrollTop = 0;  // the Save button was at the bottom: the conflict is at the top
    s.panel.box.classList.remove("guatu-folded");
  }

  /* ---------- history and restore ---------- */

  function when(at) {
    var d = new Date(at);
    return isNaN(d.getTime()) ? String(at) : d.toLocaleString("zh-CN", {hour12: false});
  }

  function history(layerId, feature) {
    endSession();
    state.map.closePopup();
    var desc = state.described[layerId];
    var panel = openPanel("历史 History " + desc.title.zh + " #" + feature.id, "guatu-history-panel", null);
    var list = el("div", "guatu-history");
    panel.body.appendChild(list);
    var said = el("div", "guatu-edit-said");
    panel.body.appendChild(said);
    function load() {
      list.textContent = "加载中… loading";
      list.dataset.loading = "1";
      call(featuresUrl(layerId) + "/" + feature.id + "/history").then(function (r) {
        if (state.panel !== panel) return;
        list.textContent = "";
        delete list.dataset.loading;
        if (!r.ok) { list.appendChild(el("div", "guatu-bad", messageOf(r))); return; }
        var changes = r.body.changes || [];
        /* the version a restore replaces (If-Match): the newest change's, or any for a deleted feature */
        var current = r.body.deleted ? "*" : (changes.length ? changes[0].version : feature.version);
        if (!changes.length) list.appendChild(el("div", null, "没有记录 no changes recorded"));
        changes.forEach(function (change) {
          list.appendChild(changeRow(layerId, desc, feature.id, change, restored, current));
        });
      });
    }
    function restored(version) {
      said.textContent = "已恢复 Restored" + (version ? "（现为 v" + version + "）" : "");
      window.guatu.reload(layerId);
      load();
    }
    load();
  }

  function changeRow(layerId, desc, fid, change, restored, current) {
    var row = el("div", "guatu-change guatu-change-" + change.op);
    row.dataset.change = String(change.id);
    row.dataset.op = change.op;
    var head = el("div", "guatu-change-head");
    head.appendChild(el("span", "guatu-change-op", OPS[change.op] || change.op));
    head.appendChild(el("span", "guatu-change-at", when(change.at)));
    head.appendChild(el("span", "guatu-change-actor", change.actor || "—"));
    if (change.version) head.appendChild(el("span", "guatu-change-version", "v" + change.version));
    row.appendChild(head);
    if (change.note) row.appendChild(el("div", "guatu-change-note", "说明 note：" + change.note));
    var before = (change.before && change.before.properties) || {};
    var after = (change.after && change.after.properties) || {};
    var names = change.changed && change.changed.length ? change.changed : fieldsOf(desc).map(function (f) { return f.name; })
      .filter(function (n) { return asText(before[n]) !== asText(after[n]); });
    var zh = {};
    fieldsOf(desc).forEach(function (f) { zh[f.name] = f; });
    var diff = el("ul", "guatu-diff");
    // The shape changed when its coordinates did (a "crs" member present on one side only is no change).
    var shapeChanged = change.before && change.after && change.before.geometry && change.after.geometry
      ? JSON.stringify(change.before.geometry.coordinates) !== JSON.stringify(change.after.geometry.coordinates)
      : names.indexOf("geometry") >= 0;
    names.forEach(function (name) {
      if (name === "geometry") return;
      var line = el("li", "guatu-diff-field");
      line.dataset.field = name;
      var label = el("span", "guatu-diff-name", (zh[name] ? zh[name].zh : name) + "：");
      if (zh[name]) label.title = zh[name].en;
      line.appendChild(label);
      line.appendChild(el("span", "guatu-diff-before", shown(null, before[name])));
      line.appendChild(document.createTextNode(" → "));
      line.appendChild(el("span", "guatu-diff-after", shown(null, after[name])));
      diff.appendChild(line);
    });
    if (shapeChanged) diff.appendChild(el("li", "guatu-diff-shape", "图形已修改 shape changed"));
    row.appendChild(diff);
    if (editable(layerId)) {
      var holder = el("div", "guatu-change-actions");
      confirmIn(holder, ["恢复此版本 Restore", "guatu-restore"], "确定恢复到此版本？", "确定恢复 Restore", function () {
        send("POST", featuresUrl(layerId) + "/" + fid + "/restore", {change: change.id}, current).then(function (r) {
          if (r.ok) restored(r.body && r.body.version);
          else holder.appendChild(el("div", "guatu-bad", "未恢复 not restored: " + messageOf(r)));
        });
      });
      row.appendChild(holder);
    }
    return row;
  }

  /* ---------- split and merge ---------- */

  function split(layerId, feature) {
    var s = begin("split", layerId);
    var map = state.map;
    var panel = openPanel("分割 Split " + s.desc.title.zh + " #" + feature.id, "guatu-split-panel", endSession);
    panel.body.appendChild(el("div", "guatu-edit-hint",
      "画一条穿过它的线，再点最后一点结束；最大的一块保留原编码，其余各块用下面的新编码 " +
      "(draw a line across it, click the last point again to finish; the largest part keeps the code, " +
      "the others take the new codes below)"));
    var codesLabel = el("label", "guatu-edit-label");
    codesLabel.appendChild(el("span", "guatu-edit-zh", "新块编码"));
    codesLabel.appendChild(el("small", "guatu-edit-en", "codes of the new parts, one per line"));
    codesLabel.htmlFor = "guatu-split-codes";
    var codes = el("textarea", "guatu-input guatu-split-codes");
    codes.id = "guatu-split-codes";
    codes.rows = 2;
    panel.body.appendChild(codesLabel);
    panel.body.appendChild(codes);
    var said = el("div", "guatu-edit-said");
    panel.body.appendChild(said);
    readFeature(layerId, feature.id).then(function (current) {
      if (state.session !== s) return;
      s.version = current.version;
      s.extra = L.geoJSON(current, {pane: "guatu-edit-near", interactive: false, pmIgnore: true,
        style: function () { return PICKED; }}).addTo(map);
      s.near = neighbours(layerId, current.id, null);
      s.onCreate = function (e) {
        if (state.session !== s) return;
        var line = e.layer.toGeoJSON(false).geometry;
        e.layer.remove();
        said.textContent = "分割中… splitting";
        send("POST", state.opts.api + "/layers/" + encodeURIComponent(layerId) + "/split",
          {id: current.id, line: line, codes: codes.value.split(/[\s,，、]+/).filter(Boolean)}, s.version).then(function (r) {
          if (state.session !== s) return;
          if (r.ok) {
            var n = (r.body && r.body.features || []).length;
            closePanel();
            window.guatu.reload(layerId);
            say("已分割为 " + n + " 块 (split into " + n + ")");
            return;
          }
          said.textContent = "未分割 not split: " + problemsOf(r.body).map(function (p) { return p.message; }).join("；") +
            "。请重画 draw again";
          said.className = "guatu-edit-said guatu-bad";
          map.pm.enableDraw("Line", drawOptions());
        });
      };
      map.on("pm:create", s.onCreate);
      s.near.loading.then(function () { if (state.session === s) map.pm.enableDraw("Line", drawOptions()); });
    }).catch(function (err) { said.textContent = err.message; });
  }

  function merge(layerId, feature) {
    var s = begin("merge", layerId);
    var panel = openPanel("合并 Merge " + s.desc.title.zh + " #" + feature.id, "guatu-merge-panel", endSession);
    panel.body.appendChild(el("div", "guatu-edit-hint", "点选要并入的相邻要素，再点“合并” (click the neighbours to merge into this one, then Merge)"));
    var picked = {};
    var list = el("div", "guatu-merge-picked", "未选 none picked");
    panel.body.appendChild(list);
    var said = el("div", "guatu-edit-said");
    var go = el("button", "guatu-button guatu-merge-go", "合并 Merge");
    go.type = "button";
    go.disabled = true;
    panel.body.appendChild(go);
    panel.body.appendChild(said);
    function showPicked() {
      var ids = Object.keys(picked);
      list.textContent = ids.length ? "已选 picked: " + ids.map(function (id) {
        var p = picked[id].feature.properties || {};
        return "#" + id + (p[window.guatu.options(layerId).key] ? " " + p[window.guatu.options(layerId).key] : "");
      }).join("、") : "未选 none picked";
      go.disabled = !ids.length;
    }
    readFeature(layerId, feature.id).then(function (current) {
      if (state.session !== s) return;
      s.extra = L.geoJSON(current, {pane: "guatu-edit-near", interactive: false, pmIgnore: true,
        style: function () { return L.extend({}, PICKED, {color: "#1d4ed8", fillColor: "#60a5fa"}); }}).addTo(state.map);
      s.near = neighbours(layerId, current.id, function (f, layer) {
        if (picked[f.id]) { delete picked[f.id]; layer.setStyle(NEAR); } else { picked[f.id] = layer; layer.setStyle(PICKED); }
        showPicked();
      });
      go.addEventListener("click", function () {
        var ids = [current.id].concat(Object.keys(picked).map(Number));
        var versions = {};  // each as it was read: a merge over a newer version is refused
        versions[current.id] = current.version;
        Object.keys(picked).forEach(function (id) { versions[id] = picked[id].feature.version; });
        said.textContent = "合并中… merging";
        send("POST", state.opts.api + "/layers/" + encodeURIComponent(layerId) + "/merge",
          {ids: ids, keep: current.id, versions: versions}).then(function (r) {
          if (state.session !== s) return;
          if (r.ok) {
            closePanel();
            window.guatu.reload(layerId);
            say("已合并为 #" + current.id + " (merged)");
            return;
          }
          said.textContent = "未合并 not merged: " + problemsOf(r.body).map(function (p) { return p.message; }).join("；");
          said.className = "guatu-edit-said guatu-bad";
        });
      });
    }).catch(function (err) { said.textContent = err.message; });
  }

  /* ---------- the map as of a past date (read-only) ---------- */

  function asOfControl() {
    var row = el("label", "guatu-asof");
    row.appendChild(el("span", "guatu-asof-name", "历史地图 Map as of"));
    var date = el("input", "guatu-asof-date");
    date.type = "datetime-local";  // a moment, as the history keeps them
    date.title = "选择日期与时间 pick a date and time";
    row.appendChild(date);
    var now = el("button", "guatu-button guatu-asof-now", "现在 Now");
    now.type = "button";
    now.hidden = true;
    row.appendChild(now);
    date.addEventListener("change", function () { setAsOf(date.value); now.hidden = !date.value; });
    now.addEventListener("click", function (e) {
      e.preventDefault();
      date.value = "";
      now.hidden = true;
      setAsOf("");
    });
    return row;
  }

  function setAsOf(date) {
    var map = state.map;
    endSession();
    closePanel();
    map.closePopup();
    Object.keys(state.past).forEach(function (id) {
      var past = state.past[id];
      map.off("moveend", past.refresh);
      past.layer.remove();
      if (past.shown) map.addLayer(window.guatu.group(id));
    });
    state.past = {};
    state.asOf = date;
    document.body.classList.toggle("guatu-as-of", Boolean(date));
    var banner = map.getContainer().querySelector(".guatu-asof-banner");
    if (banner) banner.remove();
    if (!date) { say(""); return; }
    var said = date.replace("T", " ");
    banner = el("div", "guatu-asof-banner", "正在查看 " + said + " 的地图（只读） Viewing the map as of " + said + " (read-only)");
    map.getContainer().appendChild(banner);
    var at = new Date(date).toISOString();  // the moment picked, in this browser's time zone
    state.opts.layers.forEach(function (layer) { past(layer.id, at); });
  }

  /* Draw layer ID as it was at AT in place of its group (if shown), fetched by bounding box. */
  function past(id, at) {
    var map = state.map, group = window.guatu.group(id), opts = window.guatu.options(id);
    if (!group || !opts || !map.hasLayer(group)) return;
    map.removeLayer(group);
    var drawn = L.geoJSON(null, {
      pane: "guatu-" + id,
      style: function (f) { return window.guatu.look(opts, L.extend({id: f.id}, f.properties)); },
      pointToLayer: function (f, latlng) { return L.circleMarker(latlng, {pane: "guatu-" + id, radius: opts.style.radius}); },
      onEachFeature: function (f, layer) { layer.bindPopup(function () { return pastPopup(opts, f); }); }
    }).addTo(map);
    var entry = {layer: drawn, shown: true, loading: false, seq: 0};
    entry.refresh = function () {
      if (map.getZoom() < opts.style.minZoom) { drawn.clearLayers(); return; }
      var b = map.getBounds();
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(7); });
      var mine = ++entry.seq;
      call(opts.url + "?bbox=" + bbox.join(",") + "&limit=" + opts.limit + "&as_of=" + encodeURIComponent(at)).then(function (r) {
        if (mine !== entry.seq || state.past[id] !== entry) return;
        drawn.clearLayers();
        if (r.ok) drawn.addData(r.body);
        else say("历史地图加载失败 failed: " + messageOf(r), true);
      });
    };
    map.on("moveend", entry.refresh);
    state.past[id] = entry;
    entry.refresh();
  }

  function pastPopup(opts, feature) {
    var box = el("div", "guatu-popup guatu-popup-past");
    box.appendChild(el("div", "guatu-popup-title", opts.title.zh + " " + opts.title.en + "（" + state.asOf + "）"));
    var table = el("table", "guatu-popup-table");
    opts.popup.forEach(function (field) {
      var value = (feature.properties || {})[field.name];
      if (value === null || value === undefined || value === "") return;
      var row = el("tr");
      row.appendChild(el("th", null, field.zh));
      row.appendChild(el("td", null, window.guatu.formatValue(field, value)));
      table.appendChild(row);
    });
    box.appendChild(table);
    return box;
  }

  /* ---------- for page tests ---------- */

  function idle() { return state.ready && state.pending === 0; }
  function session() {
    var s = state.session;
    return s ? {kind: s.kind, layer: s.layer, fid: s.fid, version: s.version, near: s.near ? s.near.count : 0,
                geometry: s.leaf ? geometryOf(s) : null, shapeChanged: Boolean(s.shapeChanged)} : null;
  }

  window.guatu = window.guatu || {};
  window.guatu.edit = start;
  window.guatuEdit = {idle: idle, session: session, fetch: guatuFetch};
})();
