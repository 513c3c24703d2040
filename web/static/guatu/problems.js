/* guatu 挂图 problem pins on the map page: coloured by their overdue light, a popup with number, status, deadline
   and a link to act on it; "登记问题" from a map click (right click / long press) and from any feature's popup. */
(function () {
  "use strict";

  var el = guatuDom.el;
  var COLOURS = {red: "#dc2626", yellow: "#eab308", green: "#16a34a", grey: "#9ca3af"};

  function start(map, opts) {
    var pins = L.featureGroup().addTo(map);

    function load() {
      var b = map.getBounds();
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",");
      fetch(opts.api + "/problems.geojson?bbox=" + bbox, {credentials: "same-origin"}).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (data) {
        if (!data) return;
        pins.clearLayers();
        data.features.forEach(function (f) {
          var p = f.properties;
          var pin = L.circleMarker([f.geometry.coordinates[1], f.geometry.coordinates[0]], {
            radius: 8, color: "#111827", weight: 1.5, fillColor: COLOURS[p.light], fillOpacity: 0.95,
            className: "guatu-problem-pin guatu-problem-" + p.light
          });
          pin.feature = f;
          pin.bindPopup(function () { return popup(p); });
          pins.addLayer(pin);
        });
      });
    }

    function popup(p) {
      var box = el("div", "guatu-problem-popup");
      box.appendChild(el("div", "guatu-popup-title", "问题 " + p.number));
      [[p.type, p.description], ["状态 Status", p.status + " " + p.status_en],
       ["期限 Deadline", (p.deadline || "—") + " · " + p.light_zh]].forEach(function (pair) {
        box.appendChild(el("div", null, pair[0] + "：" + pair[1]));
      });
      var open = el("a", "guatu-link", p.actions.length ? "办理 Act: " + p.actions.join("、") : "详情 Details");
      open.href = "/problems#" + p.id;
      box.appendChild(open);
      return box;
    }

    function form(extra, latlng) {
      var box = el("div", "guatu-problem-popup");
      box.appendChild(el("div", "guatu-popup-title", "登记问题 Register a problem"));
      var type = el("select");
      type.name = "problem-type";
      opts.types.forEach(function (t) { var o = el("option", null, t); o.value = t; type.appendChild(o); });
      var text = el("textarea");
      text.name = "problem-description";
      text.placeholder = "描述 Description";
      var go = el("button", "guatu-primary", "登记 Register");
      go.type = "button";
      var said = el("div");
      [type, text, go, said].forEach(function (n) { box.appendChild(n); });
      go.addEventListener("click", function () {
        var body = Object.assign({type: type.value, description: text.value, source: "巡查"}, extra);
        fetch(opts.api + "/problems", {method: "POST", body: JSON.stringify(body), credentials: "same-origin",
                                       headers: guatuDom.csrfHeaders({"Content-Type": "application/json"})})
          .then(function (r) { return r.json().then(function (d) { return {ok: r.ok, data: d}; }); })
          .then(function (out) {
            said.className = out.ok ? "guatu-good" : "guatu-bad";
            said.textContent = out.ok ? "已登记 " + out.data.number : out.data.message;
            if (out.ok) load();
          });
      });
      return box;
    }

    map.on("contextmenu", function (e) {
      L.popup().setLatLng(e.latlng).setContent(form({lon: e.latlng.lng, lat: e.latlng.lat})).openOn(map);
    });
    if (window.guatu && window.guatu.onPopup) {
      window.guatu.onPopup(function (layerOpts, feature, box) {
        var code = feature.properties && feature.properties[layerOpts.key];
        if (!code) return;
        var add = el("button", "guatu-secondary guatu-register-problem", "登记问题 Register a problem");
        add.type = "button";
        add.addEventListener("click", function () {
          box.appendChild(form({features: [{layer: layerOpts.id, code: String(code)}]}));
          add.disabled = true;
        });
        box.appendChild(add);
      });
    }
    map.on("moveend", load);
    load();
    window.guatuProblemPins = Object.assign(window.guatuProblemPins, {map: map, pins: pins, load: load});
  }

  window.guatuProblemPins = {start: start};
})();
