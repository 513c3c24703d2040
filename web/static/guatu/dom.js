/* guatu 挂图: the DOM helpers every page shares. User text only ever becomes text nodes. */
(function () {
  "use strict";

  /* Return a new TAG element with class CLS and, if given, TEXT as its text (never markup). */
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /* A tooltip's or popup's content as a text node: Leaflet puts a string in as HTML. */
  function text(value) { return el("span", null, value); }

  /* Return HEADERS (or a new object) with X-CSRF-Token set from the guatu_csrf cookie, when there is one.
     A write (POST, PUT, PATCH, DELETE) signed in by cookie is refused without it: another site can make
     the browser send the cookie, but cannot read it into a header (double submit). */
  function csrfHeaders(headers) {
    var out = headers || {};
    var found = document.cookie.match(/(?:^|;\s*)guatu_csrf=([^;]*)/);
    if (found) out["X-CSRF-Token"] = found[1];
    return out;
  }

  window.guatuDom = {el: el, text: text, csrfHeaders: csrfHeaders};
})();
