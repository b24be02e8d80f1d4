// The dashboard's own script: dates in the reader's zone, the live toggle, and polling
// when the live stream breaks. The pages work without it, only not live.
(function () {
  "use strict";
  var paused = false;
  var polling = null;

  function state(text) {
    var shown = document.getElementById("live-state");
    if (shown) shown.textContent = paused ? "paused" : text;
  }

  // A <time> shows "3 s ago"; its title is the local date.
  function localDates(root) {
    root.querySelectorAll("time[datetime]").forEach(function (time) {
      time.title = new Date(time.getAttribute("datetime")).toLocaleString();
    });
  }

  function poll() {
    if (polling) return;
    state("polling");
    polling = setInterval(function () {
      var live = document.getElementById("live");
      if (live && !paused) htmx.trigger(live, "poll");
    }, 5000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localDates(document);
    var toggle = document.getElementById("live-toggle");
    if (!toggle) return;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume live" : "Pause live";
      toggle.setAttribute("aria-pressed", String(paused));
      state(polling ? "polling" : "live");
    });
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    localDates(event.target);
  });
  // While paused, the live part keeps what it shows.
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (paused && event.target.id === "live") event.preventDefault();
  });
  document.addEventListener("htmx:sseOpen", function () {
    if (polling) clearInterval(polling);
    polling = null;
    state("live");
  });
  document.addEventListener("htmx:sseError", poll);
  document.addEventListener("htmx:sseClose", poll);
})();
