/* guatu 挂图: colour the assets by their lease contracts (按合同着色). A toggle on the map asks
   /api/contracts/assets for each let-able layer's lights in view (red: rent overdue or let out
   without a contract; yellow: expiring soon, rent below the floor, term too long; green: a
   contract in force; grey: not let) and recolours those layers through guatu.paint. */
(function () {
  "use strict";

  var el = guatuDom.el;

  function contracts(map, opts) {
    var on = false;
    var lights = {};  // layer id -> {asset key: light}
    var seq = 0;

    guatu.paint(function (layer, props, style) {
      if (!on || opts.layers.indexOf(layer.id) < 0) return null;
      var light = (lights[layer.id] || {})[props[layer.key]] || "none";
      var colour = opts.colors[light];
      return L.extend({}, style, {
        color: light === "none" ? "#6b7280" : colour,
        fillColor: colour,
        fillOpacity: light === "none" ? 0.15 : 0.7,
        weight: light === "red" ? Math.max(2, style.weight) : style.weight
      });
    });

    function view() {
      var b = map.getBounds();
      return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return v.toFixed(6); }).join(",");
    }

    function load() {
      var mine = ++seq;
      box.classList.add("guatu-contracts-loading");
      var asked = opts.layers.map(function (id) {
        var layer = guatu.options(id);
        if (layer && map.getZoom() < layer.style.minZoom) return Promise.resolve([id, {}]);  // not drawn here
        var url = opts.api + "/contracts/assets?layer=" + encodeURIComponent(id) + "&bbox=" + view();
        return fetch(url, {credentials: "same-origin"})
          .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
          .then(function (body) {
            var found = {};
            Object.keys(body.lights).forEach(function (key) { found[key] = body.lights[key].light; });
            return [id, found];
          });
      });
      Promise.all(asked).then(function (pairs) {
        if (mine !== seq) return;
        pairs.forEach(function (pair) { lights[pair[0]] = pair[1]; });
        opts.layers.forEach(guatu.restyle);
        box.classList.remove("guatu-contracts-loading");
        box.setAttribute("data-loaded", String(mine));
        say("");
      }).catch(function (err) {
        if (mine !== seq) return;
        box.classList.remove("guatu-contracts-loading");
        say("合同状态加载失败 (contract lights failed): " + err.message);
      });
    }

    function say(text) { note.textContent = text; }

    var box, note;
    var Toggle = L.Control.extend({
      options: {position: "bottomright"},  // stacked with the legend: the left holds the title, edit bar and panel
      onAdd: function () {
        box = el("div", "guatu-contracts");
        var label = el("label", "guatu-contracts-toggle");
        var check = el("input", "guatu-contracts-check");
        check.type = "checkbox";
        label.appendChild(check);
        label.appendChild(document.createTextNode(" 按合同着色 Colour by contract"));
        box.appendChild(label);
        var legend = el("div", "guatu-contracts-legend");
        opts.legend.forEach(function (row) {
          var line = el("div", "guatu-contracts-row");
          var swatch = el("span", "guatu-swatch");
          swatch.style.background = opts.colors[row.light];
          line.appendChild(swatch);
          line.appendChild(document.createTextNode(row.zh + " " + row.en));
          legend.appendChild(line);
        });
        box.appendChild(legend);
        note = el("div", "guatu-contracts-note");
        box.appendChild(note);
        L.DomEvent.disableClickPropagation(box);
        check.addEventListener("change", function () {
          on = check.checked;
          box.classList.toggle("guatu-contracts-on", on);
          if (on) { load(); } else { seq += 1; opts.layers.forEach(guatu.restyle); say(""); }
        });
        return box;
      }
    });
    new Toggle().addTo(map);
    map.on("moveend", function () { if (on) load(); });
    /* New tiles and features are drawn through look(), which asks the paint above: nothing to do for them. */
  }

  window.guatuContracts = contracts;
})();
