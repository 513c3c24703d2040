/* guatu 挂图: the leader's screen (驾驶舱). The map in the middle, the campaign's figures around it:
   assets and idle rate, revitalised this year, rent, problems, a ranking of units, trends by month.
   Laid out by a CSS grid in viewport units (cockpit.css): nothing overlaps at 1920×1080 or 3840×2160.
   No working panels: nothing here edits or filters. Refreshed every REFRESH_S seconds. */
(function () {
  "use strict";

  var el = window.guatuDom.el;

  function yuan(v) {  /* 元 → 万元 beyond ten thousand, as a leader reads money */
    if (v === null || v === undefined) return "—";
    return Math.abs(v) >= 10000 ? (v / 10000).toFixed(1) + " 万元" : Math.round(v) + " 元";
  }
  function pct(v) { return (100 * (v || 0)).toFixed(1) + "%"; }

  function card(parent, cls, title) {
    var box = el("section", "gc-card " + (cls || ""));
    box.appendChild(el("h2", "gc-card-title", title));
    var body = el("div", "gc-card-body");
    box.appendChild(body);
    parent.appendChild(box);
    return body;
  }

  function big(parent, label, value, cls, name) {
    var item = el("div", "gc-big " + (cls || ""));
    var unit = /^(.*\d)\s*(万元|元)$/.exec(value);  /* money: the unit small, so the number keeps its room */
    var number = el("div", "gc-big-value", unit ? unit[1] : value);
    if (unit) number.appendChild(el("span", "gc-unit", unit[2]));
    if (name) number.dataset.figure = name;
    item.appendChild(number);
    item.appendChild(el("div", "gc-big-label", label));
    parent.appendChild(item);
    return item;
  }

  /* Bars of a monthly series as SVG: one bar per month, the last one highlighted. */
  function monthBars(parent, title, months, fmt, color, name) {
    var box = el("div", "gc-trend");
    box.dataset.trend = name;
    box.appendChild(el("div", "gc-trend-title", title));
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 240 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "gc-trend-svg");
    var most = Math.max.apply(null, [1].concat(months.map(function (m) { return m.value; })));
    var w = 240 / months.length;
    months.forEach(function (m, i) {
      var h = 86 * m.value / most;
      var bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", (i * w + w * 0.15).toFixed(1));
      bar.setAttribute("y", (90 - h).toFixed(1));
      bar.setAttribute("width", (w * 0.7).toFixed(1));
      bar.setAttribute("height", Math.max(h, 0.5).toFixed(1));
      bar.setAttribute("fill", i === months.length - 1 ? "#fbbf24" : color);
      var tip = document.createElementNS(ns, "title");
      tip.textContent = m.month + "：" + fmt(m.value);
      bar.appendChild(tip);
      svg.appendChild(bar);
    });
    box.appendChild(svg);
    var axis = el("div", "gc-trend-axis");
    axis.appendChild(el("span", null, months.length ? months[0].month : ""));
    axis.appendChild(el("span", null, months.length ? months[months.length - 1].month + " " + fmt(months[months.length - 1].value) : ""));
    box.appendChild(axis);
    parent.appendChild(box);
  }

  function stageBar(parent, campaign) {
    var total = campaign.total, colors = ["#60a5fa", "#f59e0b", "#34d399", "#a78bfa"];
    var bar = el("div", "gc-stages");
    var parts = campaign.stages.map(function (s, i) { return {label: s, n: total.stages[s], color: colors[i % colors.length]}; });
    parts.push({label: "未开始 not started", n: total.unstaged, color: "#4b5563"});
    parts.forEach(function (p) {
      if (!total.count || !p.n) return;
      var seg = el("span", "gc-stage", p.label + " " + p.n);
      seg.style.flexGrow = String(p.n);
      seg.style.background = p.color;
      seg.title = p.label + "：" + p.n + "（" + pct(p.n / total.count) + "）";
      bar.appendChild(seg);
    });
    parent.appendChild(bar);
  }

  function render(shell, data) {
    var left = shell.querySelector(".gc-left"), right = shell.querySelector(".gc-right");
    var bottom = shell.querySelector(".gc-bottom");
    [left, right, bottom].forEach(function (n) { n.textContent = ""; });
    var a = data.assets;

    var assets = card(left, "gc-assets", "资产总量 Assets");
    a.layers.forEach(function (row) {
      var line = el("div", "gc-line");
      line.dataset.layer = row.layer;
      line.appendChild(el("span", "gc-line-label", row.zh));
      line.appendChild(el("span", "gc-line-value", row.count + " " + row.counter +
        (row.area_mu !== null ? " · " + row.area_mu.toFixed(0) + " 亩" : "")));
      assets.appendChild(line);
    });

    var idle = card(left, "gc-idle", "闲置与盘活 Idle and revitalised");
    var row = el("div", "gc-bigs");
    big(row, "闲置率 idle rate", pct(a.idle_rate), a.idle_rate > 0.2 ? "gc-red" : "gc-amber", "idle_rate");
    big(row, "今年已盘活 this year", String(data.results.this_year), "gc-green", "revitalised_this_year");
    idle.appendChild(row);
    data.results.layers.forEach(function (r) {
      var line = el("div", "gc-line gc-small");
      line.appendChild(el("span", "gc-line-label", r.zh + " " + r.result_zh));
      line.appendChild(el("span", "gc-line-value", String(r.this_year)));
      idle.appendChild(line);
    });

    if (data.rent) {
      var rent = card(left, "gc-rent", "合同租金 Rent");
      var rrow = el("div", "gc-bigs");
      big(rrow, "应收 receivable", yuan(data.rent.receivable), "", "receivable");
      big(rrow, "实收 received", yuan(data.rent.received), "gc-green", "received");
      big(rrow, "欠缴 arrears", yuan(data.rent.arrears), data.rent.arrears > 0 ? "gc-red" : "", "arrears");
      rent.appendChild(rrow);
      var warn = el("div", "gc-line gc-small");
      warn.appendChild(el("span", "gc-line-label", "合同 contracts " + data.rent.contracts));
      warn.appendChild(el("span", "gc-line-value", "逾期 " + data.rent.overdue + " · 即将到期 " + data.rent.expiring +
        " · 无合同 " + data.rent.no_contract));
      rent.appendChild(warn);
    }

    if (data.problems) {
      var probs = card(right, "gc-problems", "问题台账 Problems");
      var prow = el("div", "gc-bigs");
      big(prow, "在办 open", String(data.problems.open), "gc-amber", "problems_open");
      big(prow, "超期 overdue", String(data.problems.overdue), data.problems.overdue ? "gc-red" : "", "problems_overdue");
      big(prow, "本月销号 closed this month", String(data.problems.closed_this_month), "gc-green", "problems_closed");
      probs.appendChild(prow);
    }

    var rank = card(right, "gc-ranking", data.ranking.level.zh + "排名 Ranking by progress");
    var table = el("table", "gc-table");
    var head = el("tr");
    ["#", data.ranking.level.zh, "推进度", "闲置率"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    data.ranking.rows.forEach(function (r) {
      var tr = el("tr", "gc-rank-row");
      tr.dataset.code = r.code;
      [r.rank, r.name, pct(r.progress), pct(r.idle_rate)].forEach(function (v) { tr.appendChild(el("td", null, v)); });
      table.appendChild(tr);
    });
    rank.appendChild(table);
    var shown = data.ranking.rows.length;
    while (shown > 3 && rank.parentNode.scrollHeight > rank.parentNode.clientHeight + 1) {  // the rows the card holds
      table.removeChild(table.lastChild);
      shown -= 1;
    }
    if (shown < data.ranking.rows.length) {
      rank.parentNode.querySelector(".gc-card-title").textContent += "（前 " + shown + " 名 top " + shown + "）";
    }

    var trends = card(bottom, "gc-trends", "工作进度与月度趋势 Campaign steps and monthly trends");
    stageBar(trends, data.campaign);
    var charts = el("div", "gc-trend-row");
    monthBars(charts, "盘活 revitalised", data.results.months.map(function (m) { return {month: m.month, value: m.count}; }),
      String, "#34d399", "revitalised");
    if (data.rent && data.rent.months) {
      monthBars(charts, "租金实收 rent received", data.rent.months.map(function (m) { return {month: m.month, value: m.received}; }),
        yuan, "#60a5fa", "rent");
    }
    if (data.problems && data.problems.months) {
      monthBars(charts, "问题销号 problems closed", data.problems.months.map(function (m) { return {month: m.month, value: m.closed}; }),
        String, "#a78bfa", "problems");
    }
    trends.appendChild(charts);
    shell.querySelector(".gc-stamp").textContent = "数据日期 as of " + data.today + " · 更新 updated " + new Date().toLocaleTimeString();
    shell.dataset.loaded = String(Number(shell.dataset.loaded || 0) + 1);
  }

  /* Build the screen around MAP (the folium map) and load its figures every OPTS.refresh_s seconds. */
  function start(map, opts) {
    document.body.classList.add("guatu-cockpit");
    var shell = el("div", "gc-shell");
    var head = el("header", "gc-head");
    head.appendChild(el("h1", "gc-title", opts.title + " · 挂图作战驾驶舱"));
    head.appendChild(el("div", "gc-subtitle", "Cockpit · 排查摸底 → 清理回收 → 盘活利用 → 建章立制"));
    head.appendChild(el("div", "gc-stamp", "…"));
    shell.appendChild(head);
    shell.appendChild(el("div", "gc-left"));
    var middle = el("div", "gc-map");
    shell.appendChild(middle);
    shell.appendChild(el("div", "gc-right"));
    shell.appendChild(el("div", "gc-bottom"));
    document.body.appendChild(shell);
    middle.appendChild(map.getContainer());
    map.invalidateSize();
    var legend = document.querySelector(".guatu-legend");  // folded: the map is what the screen shows; a tap opens it
    if (legend && !legend.classList.contains("guatu-folded")) legend.querySelector(".guatu-legend-title").click();
    function load() {
      fetch(opts.api + "/cockpit", {headers: {Accept: "application/json"}}).then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        return r.json();
      }).then(function (data) { render(shell, data); }).catch(function (e) {
        shell.querySelector(".gc-stamp").textContent = "数据加载失败 could not load the figures (" + e.message + ")";
      });
    }
    load();
    setInterval(load, opts.refresh_s * 1000);
    window.addEventListener("resize", function () { map.invalidateSize(); });
  }

  window.guatuCockpit = {start: start};
})();
