// Refreshes the live part of the page in place every 10 s (the same URL, so the window choice and
// the browser's credentials carry over); when a refresh fails, a banner says since when the
// figures are stale instead of leaving old numbers that look current.
(function () {
  "use strict";
  var every = 10000;
  var lastOk = new Date();
  function stale(why) {
    document.body.classList.add("stale");
    var banner = document.getElementById("stale");
    if (banner) {
      banner.textContent = "Not updated since " + lastOk.toLocaleTimeString() + " (" + why + "); retrying every 10 s.";
    }
  }
  function tick() {
    fetch(location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var current = document.getElementById("live");
        if (!fresh || !current) { throw new Error("unexpected page"); }
        current.replaceWith(fresh);
        lastOk = new Date();
        document.body.classList.remove("stale");
      })
      .catch(function (error) { stale(error.message); })
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
