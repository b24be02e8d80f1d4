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

  // As the server spells a span (ui/time.rs).
  function span(ms) {
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return Math.floor(ms / 1000) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min";
    if (ms < 86400000) return Math.floor(ms / 3600000) + " h";
    return Math.floor(ms / 86400000) + " d";
  }

  // A <time> reads "3 s ago" (or "3 s" with data-span) and keeps counting; its title is
  // the local date.
  function localDates(root) {
    root.querySelectorAll("time[datetime]").forEach(function (time) {
      time.title = new Date(time.getAttribute("datetime")).toLocaleString();
    });
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (time) {
      var at = Date.parse(time.getAttribute("datetime"));
      if (isNaN(at)) return;
      if (time.hasAttribute("data-span")) time.textContent = span(Math.max(0, now - at));
      else if (at <= now) time.textContent = span(now - at) + " ago";
      else time.textContent = "in " + span(at - now);
    });
  }
  setInterval(tick, 1000);

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
  // While paused the page keeps what it shows; while jobs are ticked, so does its live part.
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (paused) event.preventDefault();
    var ticked = document.querySelector("input[name=ids]:checked");
    if (ticked && event.target.id === "live") event.preventDefault();
  });
  document.addEventListener("htmx:sseOpen", function () {
    if (polling) clearInterval(polling);
    polling = null;
    state("live");
  });
  document.addEventListener("htmx:sseError", poll);
  document.addEventListener("htmx:sseClose", function () {
    if (!leaving) poll();
  });

  // Leaving a page closes its stream. A browser opens at most six connections to a server,
  // and the streams of pages it kept for the back button held them: the seventh page waited
  // a minute to load. A page brought back from that cache loads anew.
  var leaving = false;
  var streams = [];
  var open = htmx.createEventSource;
  htmx.createEventSource = function (url) {
    var stream = open(url);
    streams.push(stream);
    return stream;
  };
  window.addEventListener("pagehide", function () {
    leaving = true;
    if (polling) clearInterval(polling);
    streams.forEach(function (stream) {
      stream.close();
    });
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) location.reload();
  });
})();
