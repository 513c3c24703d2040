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

  window.guatuDom = {el: el, text: text};
})();
