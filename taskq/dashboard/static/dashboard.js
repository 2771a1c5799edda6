// taskq dashboard: keeps a page's live parts current from /api/events (server-sent events).
// Progress moves in place; any other event refetches this page and swaps in the fresh
// [data-live] regions (the server renders and escapes everything: no value ever goes
// through innerHTML here). Without JavaScript the pages still work; they just don't move.
(function () {
  "use strict";
  const body = document.body;
  const streamUrl = body.dataset.stream;
  if (!streamUrl || !window.EventSource) return;
  const calm = Number(body.dataset.calm || 300);
  let timer = null;
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { cache: "no-store", headers: { Accept: "text/html" } });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        document.querySelectorAll("[data-live]").forEach(function (region) {
          const replacement = fresh.getElementById(region.id);
          if (replacement) region.replaceWith(document.adoptNode(replacement));
        });
        body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
      }
    } catch (error) {
      // (the server is away: the next event or reconnect tries again)
    } finally {
      busy = false;
      if (again) { again = false; soon(); }
    }
  }

  function soon() {
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, calm);
  }

  function showProgress(event) {
    document.querySelectorAll('[data-progress-of="' + CSS.escape(event.task_id) + '"]').forEach(function (shown) {
      const percent = Math.round((event.progress || 0) * 1000) / 10;
      shown.querySelector("progress").value = percent;
      shown.querySelector(".progress-text").textContent =
        Math.round(percent) + "%" + (event.message ? " " + event.message : "");
    });
  }

  function log(event) {
    const list = document.getElementById("events");
    if (!list) return;
    const item = document.createElement("li");
    const when = new Date(event.at).toISOString().replace("T", " ").slice(0, 23);
    item.textContent = when + "  " + (event.kind === "progress"
      ? "progress " + Math.round((event.progress || 0) * 100) + "%" + (event.message ? " " + event.message : "")
      : event.state + " (attempt " + event.attempt + ")");
    list.appendChild(item);
  }

  const source = new EventSource(streamUrl);
  source.addEventListener("ready", function () {
    body.dataset.live = "on";
    refresh(); // (whatever changed between this page's rendering and now)
  });
  source.addEventListener("task", function (message) {
    const event = JSON.parse(message.data);
    log(event);
    if (event.kind === "progress") {
      showProgress(event);
      if (document.querySelector('[data-progress-of="' + CSS.escape(event.task_id) + '"]')) return;
    }
    soon();
  });
  source.addEventListener("error", function () { body.dataset.live = "off"; });
})();
