/* guatu 挂图 phone report page (/report): a grid worker reports a problem with a photo and the browser's location.
   A report is kept in localStorage (its photo too, shrunk to a JPEG data URL) until the server confirms it,
   and is resent on `online`, on a timer and on request with the same Idempotency-Key: it arrives exactly once. */
(function () {
  "use strict";

  var el = guatuDom.el;
  var KEY = "guatu.reports";
  var MAX_SIDE = 1600;  // a phone photo shrunk to this many pixels on its long side (a few hundred kB)
  var opts = JSON.parse(document.getElementById("guatu-options").textContent);
  var sending = false;
  var position = null;

  function load() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function save(list) { localStorage.setItem(KEY, JSON.stringify(list)); }
  function update(id, change) {
    var list = load();
    list.forEach(function (r) { if (r.id === id) Object.assign(r, change); });
    save(list);
  }
  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "r-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  /* A data URL as a Blob (fetch() of a data: URL would break the page's connect-src policy). */
  function dataBlob(url) {
    var comma = url.indexOf(",");
    var type = url.slice(5, url.indexOf(";"));
    var bytes = atob(url.slice(comma + 1));
    var out = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
    return new Blob([out], {type: type});
  }

  /* Whether an answer refuses the report for good (bad input, outside the area) rather than for now:
     signed out (401), a stale CSRF token, a busy or slow server keep it waiting. */
  function refusal(status, body) {
    if (status === 401 || status === 408 || status === 429 || status >= 500) return false;
    return !(status === 403 && body && body.code === "csrf_failed");
  }

  /* Send one report: its photo first (if not yet), then the report itself, with its own Idempotency-Key. */
  function send(report) {
    var headers = guatuDom.csrfHeaders({});
    var photo = Promise.resolve(report.photoId);
    if (report.photo && !report.photoId) {
      photo = Promise.resolve(dataBlob(report.photo)).then(function (blob) {
        return fetch(opts.api + "/problems/photos?phase=" + encodeURIComponent("整改前"), {
          method: "POST", body: blob, headers: Object.assign({"Content-Type": blob.type}, headers), credentials: "same-origin"
        });
      }).then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw {refused: refusal(r.status, body), body: body};
          update(report.id, {photoId: body.id});
          return body.id;
        });
      });
    }
    return photo.then(function (photoId) {
      var body = {type: report.type, description: report.description, source: "网格员上报",
                  lon: report.lon, lat: report.lat, photos: photoId ? [photoId] : []};
      return fetch(opts.api + "/problems", {
        method: "POST", body: JSON.stringify(body), credentials: "same-origin",
        headers: Object.assign({"Content-Type": "application/json", "Idempotency-Key": report.id}, headers)
      });
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw {refused: refusal(r.status, body), body: body};
        update(report.id, {state: "sent", number: body.number, status: body.status, photo: null, error: null});
      });
    });
  }

  /* Send every report not yet confirmed, one after another; a network failure leaves it waiting. */
  function flush() {
    if (sending) return Promise.resolve();
    sending = true;
    var waiting = load().filter(function (r) { return r.state === "waiting"; });
    var chain = Promise.resolve();
    waiting.forEach(function (report) {
      chain = chain.then(function () {
        update(report.id, {tries: (report.tries || 0) + 1});
        return send(report).catch(function (err) {
          if (err && err.refused) {
            update(report.id, {state: "refused", error: (err.body && err.body.message) || "refused"});
          } else if (err && err.body && err.body.code === "login_required") {
            update(report.id, {error: "请重新登录后重发 (sign in again, then retry)"});
          } else {
            update(report.id, {error: "网络中断，稍后自动重发 (offline: will retry)"});
          }
        });
      });
    });
    return chain.then(function () { sending = false; render(); }, function () { sending = false; render(); });
  }

  /* A photo file as a JPEG data URL no longer than MAX_SIDE pixels on its long side. */
  function shrink(file) {
    return new Promise(function (resolve, reject) {
      var url = URL.createObjectURL(file);
      var img = new Image();
      img.onload = function () {
        var scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
        var canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
        canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
        canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
        URL.revokeObjectURL(url);
        resolve(canvas.toDataURL("image/jpeg", 0.85));
      };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error("not an image")); };
      img.src = url;
    });
  }

  var root = document.getElementById("guatu-root");
  var list, where, status;

  function render() {
    list.textContent = "";
    var reports = load().slice().reverse();
    if (!reports.length) list.appendChild(el("div", "guatu-muted", "尚无上报 No reports yet"));
    if (reports.length && reports[0].state === "sent" && status) {
      status.className = "guatu-upload-status guatu-good";
      status.textContent = "已发送 Sent: " + reports[0].number;
    }
    reports.forEach(function (r) {
      var item = el("div", "guatu-report-item guatu-report-" + r.state);
      item.dataset.key = r.id;
      var label = {waiting: "待发送 Waiting", sent: "已发送 Sent", refused: "被拒绝 Refused"}[r.state];
      item.appendChild(el("span", "guatu-report-state", label));
      item.appendChild(el("span", null, " " + r.type + "：" + r.description.slice(0, 30)));
      if (r.number) item.appendChild(el("div", "guatu-report-number", r.number + " · " + r.status));
      if (r.error && r.state !== "sent") item.appendChild(el("div", "guatu-muted", r.error));
      list.appendChild(item);
    });
  }

  function locate() {
    if (!navigator.geolocation) { where.textContent = "此浏览器不能定位 (no geolocation)"; return; }
    where.textContent = "定位中… locating";
    navigator.geolocation.getCurrentPosition(function (p) {
      position = {lon: p.coords.longitude, lat: p.coords.latitude, accuracy: p.coords.accuracy};
      where.textContent = "位置 Location " + position.lon.toFixed(6) + ", " + position.lat.toFixed(6) +
        " (±" + Math.round(position.accuracy) + " m, WGS84)";
      where.className = "guatu-report-where guatu-good";
    }, function (err) {
      where.textContent = "未能定位 (location failed): " + err.message;
      where.className = "guatu-report-where guatu-bad";
    }, {enableHighAccuracy: true, timeout: 15000, maximumAge: 60000});
  }

  function build() {
    root.appendChild(el("h1", "guatu-report-title", "上报问题 Report a problem"));
    var nav = el("div", "guatu-report-nav");
    var back = el("a", "guatu-link", "← 地图 Map");
    back.href = "/";
    var ledger = el("a", "guatu-link", "问题台账 Ledger");
    ledger.href = "/problems";
    nav.appendChild(back);
    nav.appendChild(ledger);
    root.appendChild(nav);
    var form = el("form", "guatu-report-form");
    var type = el("select");
    type.name = "type";
    opts.types.forEach(function (t) { var o = el("option", null, t); o.value = t; type.appendChild(o); });
    var typeLabel = el("label", "guatu-field");
    typeLabel.appendChild(el("span", null, "类型 Type"));
    typeLabel.appendChild(type);
    form.appendChild(typeLabel);
    var text = el("textarea");
    text.name = "description";
    text.rows = 3;
    text.required = true;
    text.maxLength = 2000;
    text.placeholder = "描述问题 Describe the problem";
    var textLabel = el("label", "guatu-field");
    textLabel.appendChild(el("span", null, "描述 Description"));
    textLabel.appendChild(text);
    form.appendChild(textLabel);
    var file = el("input");
    file.type = "file";
    file.name = "photo";
    file.accept = "image/*";
    file.setAttribute("capture", "environment");
    var fileLabel = el("label", "guatu-field");
    fileLabel.appendChild(el("span", null, "照片 Photo（拍照 take one）"));
    fileLabel.appendChild(file);
    form.appendChild(fileLabel);
    var preview = el("img", "guatu-report-preview");
    preview.alt = "";
    preview.hidden = true;
    form.appendChild(preview);
    where = el("div", "guatu-report-where", "");
    form.appendChild(where);
    var again = el("button", "guatu-secondary", "重新定位 Locate again");
    again.type = "button";
    again.addEventListener("click", locate);
    form.appendChild(again);
    var submit = el("button", "guatu-primary", "上报 Send");
    submit.type = "submit";
    submit.name = "send";
    form.appendChild(submit);
    status = el("div", "guatu-upload-status");
    form.appendChild(status);
    root.appendChild(form);
    var head = el("div", "guatu-report-head");
    head.appendChild(el("h2", null, "我的上报 My reports"));
    var retry = el("button", "guatu-secondary", "重发 Retry");
    retry.type = "button";
    retry.name = "retry";
    retry.addEventListener("click", function () { flush(); });
    head.appendChild(retry);
    root.appendChild(head);
    list = el("div", "guatu-report-list");
    root.appendChild(list);

    var shrunk = null;
    file.addEventListener("change", function () {
      shrunk = null;
      if (!file.files.length) { preview.hidden = true; return; }
      status.textContent = "处理照片… preparing the photo";
      shrink(file.files[0]).then(function (data) {
        shrunk = data;
        preview.src = data;
        preview.hidden = false;
        status.textContent = "";
      }, function () { status.textContent = "照片无法读取 (the photo cannot be read)"; });
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!position) { status.textContent = "尚未定位，请稍候或重新定位 (no location yet)"; status.className = "guatu-upload-status guatu-bad"; return; }
      if (file.files.length && !shrunk) { status.textContent = "照片处理中，请稍候 (photo not ready)"; return; }
      var report = {id: newKey(), type: type.value, description: text.value.trim(), lon: position.lon, lat: position.lat,
                    photo: shrunk, state: "waiting", at: new Date().toISOString()};
      if (!report.description) return;
      var listNow = load();
      listNow.push(report);
      try { save(listNow); } catch (err) {
        status.textContent = "手机存储已满，无法保存 (storage full): " + err.message;
        return;
      }
      form.reset();
      shrunk = null;
      preview.hidden = true;
      status.className = "guatu-upload-status guatu-good";
      status.textContent = "已保存，发送中 Saved, sending…";
      render();
      flush().then(function () {
        var mine = load().filter(function (r) { return r.id === report.id; })[0];
        status.textContent = mine && mine.state === "sent" ? "已发送 Sent: " + mine.number : "已保存，待发送 Saved, will send when online";
      });
    });
  }

  build();
  render();
  locate();
  window.addEventListener("online", function () { flush(); });
  setInterval(function () { if (navigator.onLine) flush(); }, 15000);
  flush();
  window.guatuReport = {flush: flush, reports: load};
})();
