"""The sign-in page: a plain form, the app's own script, nothing inline."""

from __future__ import annotations

import html
import re

from web import assets

_LOCAL = re.compile(r"^/(?![/\\])[A-Za-z0-9/_.~!$&'()*+,;=:@%?-]*$")


def is_local_path(url: str) -> bool:
    r"""Return whether URL is a path on this site only (never another site, however a browser might read it).

    >>> [is_local_path(u) for u in ("/checks?scope=370214001", "//evil.example", "/\\evil.example", "/\t/evil")]
    [True, False, False, False]
    """
    return bool(_LOCAL.match(url))


def build_login_page(*, title: str, next_url: str = "/", demo_hint: str = "") -> str:
    """Return the HTML of the sign-in page; NEXT_URL is where to go after (a path on this site only)."""
    safe_next = next_url if is_local_path(next_url) else "/"
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
