// Short polling: while the page says a run is writing (data-live="1"), fetch this page's content
// again every 2 s and swap it in. The server escapes every text, so the HTML is safe to insert.
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  function tick() {
    var main = document.getElementById("content");
    if (!main || main.dataset.live !== "1") return;
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) {
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.querySelector("#content");
          if (fresh) main.replaceWith(fresh);
        }
      })
      .catch(function () { /* the server restarting: try again next period */ })
      .finally(function () { setTimeout(tick, PERIOD_MS); });
  }
  setTimeout(tick, PERIOD_MS);
})();
