/* guatu 挂图 contracts page (/contracts): the lease contracts on a date (应收/实收/欠缴 and the warnings on top,
   the list in Tabulator), one contract's assets, instalments and payments, and for those who keep contracts
   the forms to create one, change it (If-Match: a 412 offers a retry on the latest version) and record a
   payment. Errors from the API are shown at the field they concern. */
(function () {
  "use strict";

  var el = guatuDom.el;
  var opts = JSON.parse(document.getElementById("guatu-options").textContent);
  var root = document.getElementById("guatu-root");
  var table, detail, figures, filters = {}, exportLink, mayWrite = false, current = null;

  function call(method, url, body, headers) {
    var sent = guatuDom.csrfHeaders(headers || {});
    if (body !== undefined) sent["Content-Type"] = "application/json";
    return fetch(url, {method: method, body: body === undefined ? undefined : JSON.stringify(body), headers: sent,
                       credentials: "same-origin"})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (d) {
          return {ok: r.ok, status: r.status, data: d, etag: r.headers.get("ETag")};
        });
      });
  }

  function today() {
    var d = new Date();
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
  }

  function money(v) {
    return (Number(v) || 0).toLocaleString("zh-CN", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  }

  function query(extra) {
    var q = new URLSearchParams();
    q.set("as_of", filters.asOf.value || today());
    if (filters.scope.value.trim()) q.set("scope", filters.scope.value.trim());
    if (extra) {
      if (filters.status.value) q.set("status", filters.status.value);
      if (filters.warning.value) q.set("warning", filters.warning.value);
    }
    return q;
  }

  function badge(code) {
    var w = opts.warnings[code] || {zh: code, en: code};
    var tone = code === "overdue" || code === "no_contract" ? "red" : (opts.yellow.indexOf(code) >= 0 ? "yellow" : "grey");
    var b = el("span", "guatu-badge guatu-badge-" + tone, w.zh);
    b.title = w.en;
    b.dataset.code = code;
    return b;
  }

  /* ---------- figures and list ---------- */

  function loadFigures() {
    return call("GET", opts.api + "/contracts/summary?" + query(false)).then(function (out) {
      figures.textContent = "";
      if (!out.ok) { figures.appendChild(el("div", "guatu-bad", out.data.message)); return; }
      var s = out.data;
      [["应收 Receivable", s.receivable, "receivable"], ["实收 Received", s.received, "received"],
       ["欠缴 Arrears", s.arrears, "arrears"]].forEach(function (f) {
        var box = el("div", "guatu-figure guatu-figure-" + f[2]);
        box.appendChild(el("div", "guatu-figure-label", f[0]));
        box.appendChild(el("div", "guatu-figure-value", money(f[1]) + " 元"));
        box.dataset.value = f[1];
        figures.appendChild(box);
      });
      var counts = el("div", "guatu-figure guatu-figure-counts");
      counts.appendChild(el("div", "guatu-figure-label", "合同 Contracts " + s.contracts));
      var list = el("div", "guatu-figure-badges");
      Object.keys(opts.warnings).forEach(function (code) {
        var b = badge(code);
        b.textContent = opts.warnings[code].zh + " " + (s.warnings[code] || 0);
        list.appendChild(b);
      });
      counts.appendChild(list);
      figures.appendChild(counts);
    });
  }

  function loadList() {
    var q = query(true);
    q.set("limit", "500");
    exportLink.href = opts.api + "/contracts/export.xlsx?" + query(true);
    return call("GET", opts.api + "/contracts?" + q).then(function (out) {
      if (!out.ok) { table.clearData(); table.alert((out.data.message || "error"), "error"); return; }
      table.clearAlert();
      table.replaceData(out.data.contracts.map(row));
      root.dataset.loaded = out.data.total;
    });
  }

  function row(c) {
    var p = c.position;
    return {
      id: c.id, number: c.number, lessee: c.lessee_name,
      assets: c.assets.map(function (a) { return a.code; }).join(" "),
      term: c.start_date + " ~ " + (c.terminated_on ? c.terminated_on + "（解除）" : c.end_date),
      rent: money(c.rent) + " " + c.rent_unit + " · " + c.cycle,
      receivable: p.receivable, received: p.received, arrears: p.arrears, days: p.days_overdue,
      status: p.status, warnings: p.warnings.map(function (w) { return w.code; }), light: p.light
    };
  }

  function refresh() {
    loadFigures();
    return loadList().then(function () { if (current) show(current.id); });
  }

  /* ---------- one contract ---------- */

  function line(parent, label, value) {
    var r = el("div", "guatu-contract-line");
    r.appendChild(el("b", null, label + "："));
    r.appendChild(document.createTextNode(value === null || value === undefined || value === "" ? "—" : value));
    parent.appendChild(r);
  }

  function layerOf(id) {
    for (var i = 0; i < opts.layers.length; i++) if (opts.layers[i].id === id) return opts.layers[i];
    return {id: id, zh: id, en: id};
  }

  /* The map at the asset: its box from /api/search, the map opened there ("#zoom/lat/lon"). */
  function assetLink(a) {
    var link = el("a", "guatu-link guatu-contract-asset", layerOf(a.layer).zh + " " + a.code);
    link.href = "/";
    call("GET", opts.api + "/search?q=" + encodeURIComponent(a.code) + "&limit=5").then(function (out) {
      if (!out.ok || !Array.isArray(out.data)) return;
      var hit = out.data.filter(function (h) { return h.layer === a.layer && h.code === a.code; })[0];
      if (!hit || !hit.bbox) return;
      var lat = (hit.bbox[1] + hit.bbox[3]) / 2, lon = (hit.bbox[0] + hit.bbox[2]) / 2;
      link.href = "/#18/" + lat.toFixed(6) + "/" + lon.toFixed(6);
    });
    return link;
  }

  function smallTable(cls, heads, rows) {
    var t = el("table", "guatu-contract-table " + cls);
    var h = el("tr");
    heads.forEach(function (x) { h.appendChild(el("th", null, x)); });
    t.appendChild(h);
    rows.forEach(function (r) {
      var tr = el("tr");
      if (r.cls) tr.className = r.cls;
      r.cells.forEach(function (x) { tr.appendChild(el("td", null, x)); });
      t.appendChild(tr);
    });
    return t;
  }

  function show(cid) {
    return call("GET", opts.api + "/contracts/" + cid + "?as_of=" + (filters.asOf.value || today())).then(function (out) {
      detail.textContent = "";
      if (!out.ok) { current = null; detail.appendChild(el("div", "guatu-bad", out.data.message)); return; }
      var c = out.data, p = c.position;
      current = c;
      detail.dataset.id = c.id;
      var h = el("h2");
      h.appendChild(el("span", "guatu-light guatu-light-" + p.light));
      h.appendChild(document.createTextNode(c.number + " · " + p.status));
      detail.appendChild(h);
      var warn = el("div", "guatu-contract-warnings");
      p.warnings.forEach(function (w) { warn.appendChild(badge(w.code)); });
      detail.appendChild(warn);
      line(detail, "名称 Title", c.title);
      line(detail, "出租方 Lessor", c.lessor);
      line(detail, "承租方 Lessee", c.lessee_name + (c.lessee_id ? "（" + c.lessee_id + "）" : ""));
      line(detail, "期限 Term", c.start_date + " ~ " + c.end_date + (c.terminated_on ? "，" + c.terminated_on + " 解除" : ""));
      line(detail, "租金 Rent", money(c.rent) + " " + c.rent_unit + "，" + c.cycle + "缴 · 年租金 " + money(p.annual_rent) + " 元");
      line(detail, "应收/实收/欠缴", money(p.receivable) + " / " + money(p.received) + " / " + money(p.arrears) + " 元" +
        (p.days_overdue ? "，逾期 " + p.days_overdue + " 天" : ""));
      var assets = el("div", "guatu-contract-assets");
      assets.appendChild(el("b", null, "标的 Assets："));
      c.assets.forEach(function (a) { assets.appendChild(assetLink(a)); });
      detail.appendChild(assets);
      detail.appendChild(el("h3", null, "缴费计划 Instalments"));
      detail.appendChild(smallTable("guatu-contract-schedule", ["应缴日 Due", "期间 Period", "金额 Amount", "已缴 Paid", "尚欠 Owing"],
        c.schedule.map(function (i) {
          return {cls: i.overdue ? "guatu-owing" : (i.owing ? "" : "guatu-paid"),
                  cells: [i.due, i.start + " ~ " + i.end, money(i.amount), money(i.paid), money(i.owing)]};
        })));
      detail.appendChild(el("h3", null, "收款 Payments"));
      detail.appendChild(c.payments.length ? smallTable("guatu-contract-payments",
        ["日期 Date", "金额 Amount", "备注 Note", "登记人 By"],
        c.payments.map(function (x) { return {cells: [x.paid_on, money(x.amount), x.note || "", x.recorded_by]}; }))
        : el("div", "guatu-muted", "尚无收款 No payments yet"));
      if (mayWrite) {
        var edit = el("button", "guatu-secondary guatu-contract-edit", "修改合同 Edit");
        edit.type = "button";
        edit.addEventListener("click", function () { openForm(c, out.etag); });
        detail.appendChild(edit);
        detail.appendChild(paymentForm(c));
      }
    });
  }

  /* ---------- forms ---------- */

  function fieldError(form, name, message) {
    var input = form.querySelector('[name="' + name + '"]');
    var holder = input ? input.closest(".guatu-field") : form.querySelector('[data-box="' + name + '"]');
    var box = el("div", "guatu-field-error", message);
    box.dataset.field = name;
    if (holder) { holder.appendChild(box); (input || holder).classList.add("guatu-invalid"); return true; }
    return false;
  }

  function showErrors(form, said, data) {
    form.querySelectorAll(".guatu-field-error").forEach(function (n) { n.remove(); });
    form.querySelectorAll(".guatu-invalid").forEach(function (n) { n.classList.remove("guatu-invalid"); });
    var errors = (data && data.errors) || [data || {}];
    var loose = [];
    errors.forEach(function (e) {
      var field = e.where && e.where.field ? String(e.where.field).replace(/^body\./, "") : null;
      if (!field || !fieldError(form, field, e.message)) loose.push((e.code ? e.code + "：" : "") + (e.message || ""));
    });
    said.className = "guatu-upload-status guatu-bad";
    said.textContent = loose.join("；") || "请修改标红的字段 Fix the fields marked in red";
  }

  function input(box, name, label, type, value, choices) {
    var wrap = el("label", "guatu-field");
    wrap.appendChild(el("span", null, label));
    var node;
    if (choices) {
      node = el("select");
      choices.forEach(function (c) {
        var o = el("option", null, c[1]);
        o.value = c[0];
        node.appendChild(o);
      });
    } else {
      node = el(type === "textarea" ? "textarea" : "input");
      if (type !== "textarea") node.type = type;
    }
    node.name = name;
    if (value !== undefined && value !== null) node.value = value;
    wrap.appendChild(node);
    box.appendChild(wrap);
    return node;
  }

  function assetRow(list, a, n) {
    var r = el("div", "guatu-contract-asset-row");
    var layer = input(r, "assets." + n + ".layer", "图层 Layer", null, null,
      opts.layers.map(function (l) { return [l.id, l.zh + " " + l.en]; }));
    if (a) layer.value = a.layer;
    input(r, "assets." + n + ".code", "编码 Code", "text", a ? a.code : "");
    list.appendChild(r);
  }

  function openForm(c, etag) {
    detail.textContent = "";
    var form = el("form", "guatu-contract-form");
    form.noValidate = true;
    form.appendChild(el("h2", null, c ? "修改合同 Edit " + c.number : "新建合同 New contract"));
    var v = c || {};
    var pick = function (list) { return [["", "—"]].concat(list.map(function (x) { return [x, x]; })); };
    input(form, "number", "合同编号 Number *", "text", v.number);
    input(form, "title", "合同名称 Title", "text", v.title);
    input(form, "lessor", "出租方 Lessor *", "text", v.lessor);
    input(form, "lessee_name", "承租方 Lessee *", "text", v.lessee_name);
    input(form, "lessee_id", "证件号码 Lessee ID", "text", v.lessee_id);
    input(form, "trade_mode", "交易方式 Mode", null, v.trade_mode || "", pick(opts.modes));
    input(form, "deliberation_ref", "四议两公开决议 Resolution", "text", v.deliberation_ref);
    input(form, "signed_on", "签订日期 Signed on", "date", v.signed_on);
    input(form, "start_date", "起始日期 Start *", "date", v.start_date);
    input(form, "end_date", "终止日期 End *", "date", v.end_date);
    input(form, "terminated_on", "提前解除 Terminated on", "date", v.terminated_on);
    input(form, "area_m2", "面积 m² Area", "number", v.area_m2);
    input(form, "rent", "租金 Rent *", "number", v.rent);
    input(form, "rent_unit", "租金单位 Unit *", null, v.rent_unit || opts.units[0], opts.units.map(function (x) { return [x, x]; }));
    input(form, "cycle", "缴费周期 Cycle *", null, v.cycle || "年", opts.cycles.map(function (x) { return [x, x]; }));
    input(form, "deposit", "保证金 Deposit", "number", v.deposit);
    var disputed = input(form, "disputed", "纠纷 Disputed", "checkbox");
    disputed.checked = !!v.disputed;
    input(form, "note", "备注 Note", "textarea", v.note);
    var assets = el("fieldset", "guatu-contract-assets-form");
    assets.dataset.box = "assets";  // where an error about the assets together (assets_apart) is shown
    assets.appendChild(el("legend", null, "标的 Assets *（图层 + 编码 layer + code）"));
    var list = el("div");
    assets.appendChild(list);
    (v.assets && v.assets.length ? v.assets : [null]).forEach(function (a, n) { assetRow(list, a, n); });
    var more = el("button", "guatu-secondary", "+ 标的 Asset");
    more.type = "button";
    more.addEventListener("click", function () {
      if (list.children.length < opts.maxAssets) assetRow(list, null, list.children.length);
    });
    assets.appendChild(more);
    form.appendChild(assets);
    var buttons = el("div", "guatu-contract-buttons");
    var save = el("button", "guatu-primary guatu-contract-save", "保存 Save");
    save.type = "submit";
    var cancel = el("button", "guatu-secondary", "取消 Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", function () { if (c) show(c.id); else detail.textContent = ""; });
    buttons.appendChild(save);
    buttons.appendChild(cancel);
    form.appendChild(buttons);
    var said = el("div", "guatu-upload-status");
    form.appendChild(said);
    detail.appendChild(form);
    var version = etag;

    function body() {
      var out = {};
      ["number", "title", "lessor", "lessee_name", "lessee_id", "trade_mode", "deliberation_ref", "signed_on",
       "start_date", "end_date", "terminated_on", "area_m2", "rent", "rent_unit", "cycle", "deposit", "note"]
        .forEach(function (name) {
          var value = form.elements[name].value.trim();
          out[name] = value === "" ? null : value;
        });
      out.disputed = disputed.checked;
      out.assets = Array.prototype.map.call(list.children, function (r) {
        return {layer: r.querySelector("select").value, code: r.querySelector("input").value.trim()};
      }).filter(function (a) { return a.code; });
      return out;
    }

    function send() {
      save.disabled = true;
      said.className = "guatu-upload-status";
      said.textContent = "保存中… Saving…";
      var url = opts.api + "/contracts" + (c ? "/" + c.id : "") + "?as_of=" + (filters.asOf.value || today());
      call(c ? "PUT" : "POST", url, body(), c ? {"If-Match": version} : {}).then(function (out) {
        save.disabled = false;
        if (out.ok) {
          current = out.data;
          refresh();
          return;
        }
        if (out.status === 412 && out.data.current) {
          showErrors(form, said, out.data);
          said.textContent = "他人已修改此合同（当前第 " + out.data.current.version + " 版）。Changed meanwhile (now version " +
            out.data.current.version + "). ";
          var retry = el("button", "guatu-secondary guatu-contract-retry", "以我的内容覆盖最新版 Retry on the latest");
          retry.type = "button";
          retry.addEventListener("click", function () { version = '"' + out.data.current.version + '"'; send(); });
          said.appendChild(retry);
          return;
        }
        showErrors(form, said, out.data);
      });
    }

    form.addEventListener("submit", function (ev) { ev.preventDefault(); send(); });
  }

  function paymentForm(c) {
    var form = el("form", "guatu-contract-payment");
    form.noValidate = true;
    form.appendChild(el("h3", null, "登记收款 Record a payment"));
    input(form, "paid_on", "收款日期 Paid on", "date", filters.asOf.value || today());
    input(form, "amount", "金额(元) Amount", "number");
    input(form, "note", "备注/收据号 Note", "text");
    var go = el("button", "guatu-primary guatu-contract-pay", "登记 Record");
    go.type = "submit";
    form.appendChild(go);
    var said = el("div", "guatu-upload-status");
    form.appendChild(said);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      go.disabled = true;
      var body = {paid_on: form.elements.paid_on.value || null, amount: form.elements.amount.value.trim() || null,
                  note: form.elements.note.value.trim() || null};
      call("POST", opts.api + "/contracts/" + c.id + "/payments?as_of=" + (filters.asOf.value || today()), body)
        .then(function (out) {
          go.disabled = false;
          if (!out.ok) { showErrors(form, said, out.data); return; }
          refresh();
        });
    });
    return form;
  }

  /* ---------- the page ---------- */

  function build() {
    var head = el("div", "guatu-problems-head");
    head.appendChild(el("h1", null, "合同台账 Contracts"));
    [["/", "地图 Map"], ["/problems", "问题 Problems"], ["/checks", "边界检查 Checks"]].forEach(function (l) {
      var a = el("a", "guatu-link", l[1]);
      a.href = l[0];
      head.appendChild(a);
    });
    root.appendChild(head);
    var bar = el("div", "guatu-contracts-filters");
    filters.asOf = input(bar, "as_of", "截至 As of", "date", today());
    filters.status = input(bar, "status", "状态 Status", null, "",
      [["", "全部 All"]].concat(opts.statuses.map(function (s) { return [s, s]; })));
    filters.warning = input(bar, "warning", "预警 Warning", null, "",
      [["", "全部 All"]].concat(Object.keys(opts.warnings).filter(function (k) { return k !== "no_contract"; })
        .map(function (k) { return [k, opts.warnings[k].zh + " " + opts.warnings[k].en]; })));
    filters.scope = input(bar, "scope", "范围编码 Scope", "text", "");
    filters.scope.placeholder = "街道/社区/网格编码";
    [filters.asOf, filters.status, filters.warning, filters.scope].forEach(function (f) {
      f.addEventListener("change", refresh);
    });
    exportLink = el("a", "guatu-button guatu-export", "导出 Excel");
    exportLink.title = "导出当前筛选的合同与收款 Export these contracts and their payments";
    bar.appendChild(exportLink);
    root.appendChild(bar);
    figures = el("div", "guatu-contracts-figures");
    root.appendChild(figures);
    var grid = el("div", "guatu-problems-grid");
    var holder = el("div", "guatu-contracts-table");
    grid.appendChild(holder);
    detail = el("div", "guatu-problem-detail guatu-contract-detail");
    detail.appendChild(el("div", "guatu-muted", "点击一行查看 Click a row"));
    grid.appendChild(detail);
    root.appendChild(grid);
    table = new Tabulator(holder, {
      layout: "fitDataFill", maxHeight: "62vh", index: "id", placeholder: "无合同 No contracts",
      columns: [
        {title: "", field: "light", width: 36, headerSort: false, formatter: function (cell) {
          return el("span", "guatu-light guatu-light-" + cell.getValue());
        }},
        {title: "编号 No.", field: "number", frozen: true},
        {title: "承租方 Lessee", field: "lessee"},
        {title: "标的 Assets", field: "assets", maxWidth: 200},
        {title: "期限 Term", field: "term"},
        {title: "租金 Rent", field: "rent"},
        {title: "应收 Receivable", field: "receivable", hozAlign: "right", formatter: function (c) { return money(c.getValue()); }},
        {title: "实收 Received", field: "received", hozAlign: "right", formatter: function (c) { return money(c.getValue()); }},
        {title: "欠缴 Arrears", field: "arrears", hozAlign: "right", formatter: function (c) { return money(c.getValue()); }},
        {title: "逾期天数 Days", field: "days", hozAlign: "right"},
        {title: "状态 Status", field: "status"},
        {title: "预警 Warnings", field: "warnings", headerSort: false, formatter: function (cell) {
          var box = el("span");
          cell.getValue().forEach(function (code) { box.appendChild(badge(code)); });
          return box;
        }}
      ]
    });
    table.on("rowClick", function (_, r) { show(r.getData().id); });
    table.on("tableBuilt", function () {
      call("GET", opts.api + "/me").then(function (out) {
        mayWrite = !!(out.ok && out.data.may && out.data.may.contracts);
        if (mayWrite) {
          var add = el("button", "guatu-primary guatu-contract-new", "新建合同 New contract");
          add.type = "button";
          add.addEventListener("click", function () { current = null; openForm(null, null); });
          head.appendChild(add);
        }
        root.dataset.ready = "1";
        refresh();
      });
    });
  }

  build();
  window.guatuContracts = {refresh: refresh, show: show, table: function () { return table; }};
})();
