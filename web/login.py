"""The sign-in page: a plain form, the app's own script, nothing inline."""

from __future__ import annotations

import html

from web import assets


def build_login_page(*, title: str, next_url: str = "/", demo_hint: str = "") -> str:
    """Return the HTML of the sign-in page; NEXT_URL is where to go after (a path on this site only)."""
    safe_next = next_url if next_url.startswith("/") and not next_url.startswith("//") else "/"
    hint = f'<p class="guatu-login-hint">{html.escape(demo_hint)}</p>' if demo_hint else ""
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>登录 Sign in · {html.escape(title)} · guatu 挂图</title>
<link rel="icon" href="{assets.FAVICON}" type="image/svg+xml">
<link rel="stylesheet" href="{assets.GUATU_CSS}">
<script src="{assets.LOGIN_JS}" defer></script>
</head>
<body class="guatu-login-body">
<main class="guatu-login">
  <h1>{html.escape(title)}</h1>
  <p class="guatu-login-sub">集体资源一张图 · 请登录 Sign in</p>
  <form id="guatu-login-form" method="post" action="/api/login" data-next="{html.escape(safe_next)}">
    <label>用户名 <small>Username</small>
      <input name="username" id="guatu-username" autocomplete="username" required maxlength="60"></label>
    <label>密码 <small>Password</small>
      <input name="password" id="guatu-password" type="password" autocomplete="current-password" required
        maxlength="200"></label>
    <button type="submit" id="guatu-login-submit">登录 Sign in</button>
    <p id="guatu-login-status" role="status" aria-live="polite"></p>
  </form>
  {hint}
</main>
</body>
</html>
"""
