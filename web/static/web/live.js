// The live pages' clock. Every WEB_LIVE_SECONDS (the live-seconds meta of web/base.html) it
// fires a "live-tick" event on <body>: htmx fragments (hx-trigger="live-tick from:body")
// fetch themselves, charts.js fetches the charts' tails. A hidden tab does not tick, so a
// forgotten tab costs the server nothing; shown again, it ticks at once to catch up.
// <body data-live-ticks> counts the ticks and data-live-state says "running" or "paused".
"use strict";
(function () {
  const meta = document.querySelector('meta[name="live-seconds"]');
  const seconds = meta ? parseFloat(meta.content) : 0;
  if (!(seconds > 0) || !document.querySelector("[data-live]")) return;
  const body = document.body;
  let timer = null;

  function tick() {
    body.dataset.liveTicks = String(Number(body.dataset.liveTicks || 0) + 1);
    body.dispatchEvent(new CustomEvent("live-tick"));
  }

  function start() {
    if (timer === null) timer = setInterval(tick, seconds * 1000);
    body.dataset.liveState = "running";
  }

  function pause() {
    clearInterval(timer);
    timer = null;
    body.dataset.liveState = "paused";
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      pause();
    } else {
      tick();
      start();
    }
  });
  if (document.hidden) pause(); else start();
})();
