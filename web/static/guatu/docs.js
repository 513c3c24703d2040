/* guatu 挂图 API docs: Swagger UI's writes ("Try it out") carry X-CSRF-Token, as the pages' own do.
   Swagger UI is built by FastAPI's page, which takes no request interceptor; its requests go
   through window.fetch, so writes are given the header there (needs dom.js). */
(function () {
  "use strict";

  var plain = window.fetch.bind(window);

  window.fetch = function (input, init) {
    var options = init || {};
    var method = String(options.method || (input && input.method) || "GET").toUpperCase();
    if (method === "GET" || method === "HEAD") return plain(input, options);
    var headers = new Headers(options.headers || (input && input.headers) || {});
    var token = guatuDom.csrfHeaders()["X-CSRF-Token"];
    if (token !== undefined && !headers.has("X-CSRF-Token")) headers.set("X-CSRF-Token", token);
    return plain(input, Object.assign({}, options, {headers: headers}));
  };
})();
