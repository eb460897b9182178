// Refreshes the live part of the page in place every 10 s (same path and query, so the window
// choice carries over; from location.origin, which leaves out user:password@ from the address bar:
// fetch refuses URLs with credentials, and the browser adds the ones it logged in with); when
// a refresh fails, a banner says since when the figures are stale instead of leaving old numbers
// that look current. body[data-refreshes] counts the swaps (the browser test reads it).
(function () {
  "use strict";
  var every = 10000;
  var lastOk = new Date();
  var refreshes = 0;
  function stale(why) {
    document.body.classList.add("stale");
    var banner = document.getElementById("stale");
    if (banner) {
      banner.textContent = "Not updated since " + lastOk.toLocaleTimeString() + " (" + why + "); retrying every 10 s.";
    }
  }
  function tick() {
    fetch(location.origin + location.pathname + location.search, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var current = document.getElementById("live");
        if (!fresh || !current) { throw new Error("unexpected page"); }
        current.replaceWith(fresh);
        document.title = fresh.getAttribute("data-title") || document.title;
        lastOk = new Date();
        refreshes += 1;
        document.body.setAttribute("data-refreshes", String(refreshes));
        document.body.classList.remove("stale");
      })
      .catch(function (error) { stale(error.message); })
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
