// Shows every <time datetime> in the reader's own time zone (the server renders UTC), keeps
// "running for" counters current, offers a switch back to UTC, and keeps live admin regions
// current. The page is complete without it.
(function () {
  "use strict";
  var KEY = "herald-zone";
  var useUtc = false;
  try { useUtc = localStorage.getItem(KEY) === "utc"; } catch (e) { /* storage may be blocked */ }

  function zone() { return useUtc ? "UTC" : undefined; }

  // The server's own shape ("Wed 2 Dec 2026, 05:40 UTC", 24-hour clock) in the reader's zone:
  // the same words as the page had, so nothing reflows when the script runs.
  function format(date, style) {
    var clock = style === "clock" || style === "clockzone";
    var opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: zone() };
    if (!clock || style === "clockzone") opts.timeZoneName = "short";
    if (!clock) { opts.weekday = "short"; opts.day = "numeric"; opts.month = "short"; opts.year = "numeric"; }
    var p = {};
    new Intl.DateTimeFormat("en-US", opts).formatToParts(date).forEach(function (part) { p[part.type] = part.value; });
    var time = p.hour + ":" + p.minute + (p.timeZoneName ? " " + p.timeZoneName : "");
    return clock ? time : p.weekday + " " + p.day + " " + p.month + " " + p.year + ", " + time;
  }

  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return h > 0 ? d + " d " + h + " h" : d + " d";
    if (h > 0) return m > 0 ? h + " h " + m + " min" : h + " h";
    if (m > 0) return m + " min";
    return s + " s";
  }

  function render() {
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) continue;
      if (!el.hasAttribute("data-utc")) el.setAttribute("data-utc", el.getAttribute("title") || el.textContent);
      el.textContent = format(date, el.getAttribute("data-style"));
      el.setAttribute("title", el.getAttribute("data-utc"));
    }
    var note = document.getElementById("zone-note");
    if (note) {
      var name = useUtc ? "UTC" : Intl.DateTimeFormat().resolvedOptions().timeZone;
      note.textContent = useUtc ? "in UTC" : "in your time zone (" + name + ")";
    }
    var toggle = document.getElementById("zone-toggle");
    if (toggle) {
      toggle.hidden = false;
      toggle.textContent = useUtc ? "Show my time zone" : "Show UTC";
    }
  }

  function tick() {
    var els = document.querySelectorAll("[data-elapsed]");
    for (var i = 0; i < els.length; i++) {
      var since = new Date(els[i].getAttribute("data-elapsed"));
      if (!isNaN(since)) els[i].textContent = duration(Date.now() - since);
    }
  }

  // Forms that take times in a named zone start with the reader's own zone (UTC without script).
  function preferLocalZone() {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var fields = document.querySelectorAll("input[name='time_zone']");
    for (var i = 0; i < fields.length; i++) {
      if (zone && fields[i].value === "UTC" && fields[i].defaultValue === "UTC") fields[i].value = zone;
    }
  }

  // Regions marked data-live (an admin page watching a rollout) are refreshed from the server
  // every few seconds while the tab is visible and nobody is typing in them.
  function refreshLive() {
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length || document.visibilityState !== "visible" || !window.fetch) return;
    for (var i = 0; i < regions.length; i++) {
      if (regions[i].contains(document.activeElement) && document.activeElement !== document.body) return;
    }
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        for (var i = 0; i < regions.length; i++) {
          var id = regions[i].id;
          var next = id && fresh.getElementById(id);
          if (next && !regions[i].contains(document.activeElement)) regions[i].innerHTML = next.innerHTML;
        }
        render();
      })
      .catch(function () { /* the next round tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    preferLocalZone();
    render();
    tick();
    setInterval(tick, 30000);
    if (document.querySelector("[data-live]")) setInterval(refreshLive, 5000);
    var toggle = document.getElementById("zone-toggle");
    if (toggle) toggle.addEventListener("click", function () {
      useUtc = !useUtc;
      try { localStorage.setItem(KEY, useUtc ? "utc" : "local"); } catch (e) { /* ignore */ }
      render();
    });
  });
})();
