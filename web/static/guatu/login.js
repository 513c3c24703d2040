/* guatu 挂图: sign in with JSON (never a form post the browser could be tricked into), then go on. */
(function () {
  "use strict";
  function start() {
    var form = document.getElementById("guatu-login-form");
    var status = document.getElementById("guatu-login-status");
    var button = document.getElementById("guatu-login-submit");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      status.textContent = "正在登录… Signing in…";
      status.className = "";
      button.disabled = true;
      var headers = {"Content-Type": "application/json"};
      var old = document.cookie.match(/(?:^|;\s*)guatu_csrf=([^;]*)/);
      if (old) headers["X-CSRF-Token"] = decodeURIComponent(old[1]);  /* signing in again over a session */
      fetch("/api/login", {
        method: "POST",
        credentials: "same-origin",
        headers: headers,
        body: JSON.stringify({
          username: document.getElementById("guatu-username").value,
          password: document.getElementById("guatu-password").value
        })
      }).then(function (resp) {
        return resp.json().then(function (body) { return {ok: resp.ok, body: body}; });
      }).then(function (res) {
        if (res.ok) {
          status.textContent = "已登录 Signed in";
          window.location.assign(form.getAttribute("data-next") || "/");
          return;
        }
        status.textContent = res.body.message || "登录失败 Sign-in failed";
        status.className = "guatu-error";
        button.disabled = false;
      }).catch(function () {
        status.textContent = "无法连接服务器 Cannot reach the server";
        status.className = "guatu-error";
        button.disabled = false;
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
