/* guatu 挂图 problem ledger page (/problems): counts per community (open / overdue / closed this month), the list
   (Tabulator), and one problem with its immutable log, its photos and the actions the user may take. */
(function () {
  "use strict";

  var el = guatuDom.el;
  var opts = JSON.parse(document.getElementById("guatu-options").textContent);
  var root = document.getElementById("guatu-root");
  var table, detail, counts;

  function call(method, url, body, type) {
    var headers = guatuDom.csrfHeaders({});
    if (type) headers["Content-Type"] = type;
    return fetch(url, {method: method, body: body, headers: headers, credentials: "same-origin"})
      .then(function (r) { return r.json().then(function (d) { return {ok: r.ok, data: d}; }); });
  }

  function lightDot(light) {
    var dot = el("span", "guatu-light guatu-light-" + light);
    dot.title = opts.lights[light] || light;
    return dot;
  }

  function loadCounts() {
    return call("GET", opts.api + "/problems/summary?by=community").then(function (out) {
      counts.textContent = "";
      if (!out.ok) return;
      var head = el("tr");
      ["社区 Community", "未销号 Open", "逾期 Overdue", "本月销号 Closed this month"].forEach(function (h) {
        head.appendChild(el("th", null, h));
      });
      counts.appendChild(head);
      out.data.rows.concat([Object.assign({community: "合计 Total"}, out.data.total)]).forEach(function (row) {
        var tr = el("tr", "guatu-problems-count-row");
        [row.community, row.open, row.overdue, row.closed_this_month].forEach(function (v) { tr.appendChild(el("td", null, v)); });
        counts.appendChild(tr);
      });
    });
  }

  function loadList() {
    return call("GET", opts.api + "/problems?size=500").then(function (out) {
      if (out.ok) table.replaceData(out.data.items);
    });
  }

  function refresh(pid) {
    loadCounts();
    loadList();
    if (pid) show(pid);
  }

  function uploadPhoto(file) {
    return call("POST", opts.api + "/problems/photos?phase=" + encodeURIComponent("整改后"), file, file.type || "image/jpeg");
  }

  function actionForm(p, action) {
    var box = el("div", "guatu-problem-action");
    var fields = {};
    function input(name, label, type) {
      var wrap = el("label", "guatu-field");
      wrap.appendChild(el("span", null, label));
      var node = el(type === "textarea" ? "textarea" : "input");
      if (type !== "textarea") node.type = type;
      node.name = name;
      wrap.appendChild(node);
      box.appendChild(wrap);
      fields[name] = node;
    }
    if (action === "交办") {
      input("assignee", "责任人账号 Assignee (username)", "text");
      input("unit", "责任单位 Unit", "text");
      input("deadline", "期限 Deadline", "date");
    }
    if (action === "提交验收") input("photo", "整改后照片 After photo", "file");
    input("note", "说明 Note", "textarea");
    var go = el("button", action === "退回" ? "guatu-secondary" : "guatu-primary", action);
    go.type = "button";
    go.name = "action-" + action;
    var said = el("div", "guatu-upload-status");
    go.addEventListener("click", function () {
      go.disabled = true;
      var photo = fields.photo && fields.photo.files.length ? uploadPhoto(fields.photo.files[0]) : Promise.resolve(null);
      photo.then(function (up) {
        if (up && !up.ok) throw up.data;
        var body = {action: action, note: fields.note.value || null, photos: up ? [up.data.id] : []};
        if (fields.assignee) {
          body.assignee = fields.assignee.value;
          body.unit = fields.unit.value || null;
          body.deadline = fields.deadline.value || null;
        }
        return call("POST", opts.api + "/problems/" + p.id + "/events", JSON.stringify(body), "application/json");
      }).then(function (out) {
        if (!out.ok) throw out.data;
        refresh(p.id);
      }).catch(function (err) {
        go.disabled = false;
        said.className = "guatu-upload-status guatu-bad";
        said.textContent = (err.code || "") + "：" + (err.message || err);
      });
    });
    box.appendChild(go);
    box.appendChild(said);
    return box;
  }

  function show(pid) {
    call("GET", opts.api + "/problems/" + pid).then(function (out) {
      detail.textContent = "";
      if (!out.ok) { detail.appendChild(el("div", "guatu-bad", out.data.message)); return; }
      var p = out.data;
      detail.dataset.id = p.id;
      var h = el("h2");
      h.appendChild(lightDot(p.light));
      h.appendChild(document.createTextNode(p.number + " · " + p.status + " " + p.status_en));
      detail.appendChild(h);
      [["类型 Type", p.type], ["来源 Source", p.source], ["描述 Description", p.description],
       ["网格/社区 Area", p.area], ["责任单位 Unit", p.unit || "—"], ["责任人 Assignee", p.assignee || "—"],
       ["期限 Deadline", (p.deadline || "—") + " " + (opts.lights[p.light] || "")]].forEach(function (pair) {
        var row = el("div");
        row.appendChild(el("b", null, pair[0] + "："));
        row.appendChild(document.createTextNode(pair[1]));
        detail.appendChild(row);
      });
      var photos = el("div", "guatu-problem-photos");
      p.events.forEach(function (e) {
        e.photos.forEach(function (sha) {
          var img = el("img");
          img.src = opts.api + "/problems/photos/" + sha;
          img.alt = e.action;
          img.title = e.action + " " + e.at;
          photos.appendChild(img);
        });
      });
      detail.appendChild(photos);
      var log = el("ol", "guatu-problem-log");
      p.events.forEach(function (e) {
        log.appendChild(el("li", "guatu-problem-event", e.at.slice(0, 16).replace("T", " ") + " " + e.actor + " " +
          e.action + "：" + (e.from || "—") + " → " + e.to + (e.note ? "（" + e.note + "）" : "")));
      });
      detail.appendChild(log);
      var actions = el("div", "guatu-problem-actions");
      if (!p.actions.length) actions.appendChild(el("div", "guatu-muted", "您现在无可办理的操作 Nothing for you to do now"));
      p.actions.forEach(function (a) { actions.appendChild(actionForm(p, a)); });
      detail.appendChild(actions);
    });
  }

  function build() {
    var head = el("div", "guatu-problems-head");
    head.appendChild(el("h1", null, "问题台账 Problem ledger"));
    [["/", "地图 Map"], ["/report", "上报 Report"], ["/checks", "边界检查 Checks"], ["/contracts", "合同 Contracts"]]
      .forEach(function (l) {
        var a = el("a", "guatu-link", l[1]);
        a.href = l[0];
        head.appendChild(a);
      });
    var xlsx = el("a", "guatu-link guatu-export", "导出 Excel");
    xlsx.href = opts.api + "/problems/export.xlsx";
    xlsx.title = "问题台账与流转记录 The ledger and its log";
    head.appendChild(xlsx);
    root.appendChild(head);
    counts = el("table", "guatu-problems-counts");
    root.appendChild(counts);
    var grid = el("div", "guatu-problems-grid");
    var holder = el("div", "guatu-problems-table");
    grid.appendChild(holder);
    detail = el("div", "guatu-problem-detail");
    detail.appendChild(el("div", "guatu-muted", "点击一行查看 Click a row"));
    grid.appendChild(detail);
    root.appendChild(grid);
    table = new Tabulator(holder, {
      layout: "fitColumns", height: "65vh", index: "id", placeholder: "无问题 No problems",
      columns: [
        {title: "", field: "light", width: 36, formatter: function (cell) { return lightDot(cell.getValue()); }},
        {title: "编号 No.", field: "number", width: 150},
        {title: "类型 Type", field: "type", width: 100},
        {title: "描述 Description", field: "description"},
        {title: "社区 Community", field: "community", width: 130},
        {title: "责任单位 Unit", field: "unit", width: 110},
        {title: "期限 Deadline", field: "deadline", width: 110},
        {title: "状态 Status", field: "status", width: 90}
      ]
    });
    table.on("rowClick", function (_, row) { show(row.getData().id); });
    table.on("tableBuilt", function () { refresh(Number(location.hash.slice(1)) || null); });
  }

  build();
  window.guatuProblems = {refresh: refresh, show: show, table: function () { return table; }};
})();
