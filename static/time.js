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
      var style = el.getAttribute("data-style");
      // An end shown as a time of day only when it falls on its start's day where the reader is.
      var start = el.hasAttribute("data-same-day") && new Date(el.getAttribute("data-same-day"));
      if (start && !isNaN(start) && wallClock(start, zone()).slice(0, 10) !== wallClock(date, zone()).slice(0, 10)) style = "full";
      el.textContent = format(date, style);
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

  // A date and time as a datetime-local field holds it ("2026-12-13T02:00"), in zone `tz`.
  function wallClock(date, tz) {
    var p = {};
    new Intl.DateTimeFormat("en-US", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      hourCycle: "h23", timeZone: tz
    }).formatToParts(date).forEach(function (part) { p[part.type] = part.value; });
    return p.year + "-" + p.month + "-" + p.day + "T" + p.hour + ":" + p.minute;
  }

  // Forms that take times in a named zone arrive in UTC (what a page without script shows).
  // The script moves the whole form to the reader's zone: the zone's name and every time in
  // it together, so the times still mean the same instants and saving unchanged changes
  // nothing. A form whose times cannot all be read is left as it came.
  function preferLocalZone() {
    var local = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!local || local === "UTC") return;
    var fields = document.querySelectorAll("input[name='time_zone']");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.value !== "UTC" || !field.form) continue;
      var inputs = field.form.querySelectorAll("input[type='datetime-local']");
      var moved = [], readable = true;
      for (var j = 0; j < inputs.length; j++) {
        if (!inputs[j].value) continue;
        var at = new Date(inputs[j].value.slice(0, 16) + ":00Z");
        if (isNaN(at)) { readable = false; break; }
        moved.push([inputs[j], wallClock(at, local)]);
      }
      if (!readable) continue;
      moved.forEach(function (m) { m[0].value = m[1]; });
      field.value = local;
    }
  }

  // Typing a date means "at a set time": choose it, so the date is not dropped.
  function dateChoosesFixed(event) {
    var input = event.target;
    if (!input || input.type !== "datetime-local" || !input.form || !input.value) return;
    var fixed = input.form.querySelector("input[name='when'][value='fixed']");
    if (fixed) fixed.checked = true;
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

  // Buttons that only work with script are shown by it: Copy (a one-time token), Show/Hide (a
  // secret field), and a slug suggested from the name until someone types one.
  function enhanceForms() {
    var copies = document.querySelectorAll("[data-copy]");
    for (var i = 0; i < copies.length; i++) {
      if (!navigator.clipboard) continue;
      copies[i].hidden = false;
      copies[i].addEventListener("click", function (event) {
        var button = event.currentTarget;
        var source = document.getElementById(button.getAttribute("data-copy"));
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "Copied";
        }, function () { button.textContent = "Select and copy it"; });
      });
    }
    var reveals = document.querySelectorAll("[data-reveal]");
    for (var j = 0; j < reveals.length; j++) {
      reveals[j].hidden = false;
      reveals[j].addEventListener("click", function (event) {
        var button = event.currentTarget;
        var field = document.getElementById(button.getAttribute("data-reveal"));
        var show = field.type === "password";
        field.type = show ? "text" : "password";
        button.textContent = show ? "Hide" : "Show";
        button.setAttribute("aria-pressed", show ? "true" : "false");
      });
    }
    var slug = document.querySelector("input[data-slug-from]");
    if (slug) {
      var name = document.getElementById(slug.getAttribute("data-slug-from"));
      var touched = slug.value !== "";
      slug.addEventListener("input", function () { touched = slug.value !== ""; });
      if (name) name.addEventListener("input", function () {
        if (touched) return;
        slug.value = name.value.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
          .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
      });
    }
  }

  document.addEventListener("input", dateChoosesFixed);
  document.addEventListener("change", dateChoosesFixed);
  document.addEventListener("DOMContentLoaded", function () {
    preferLocalZone();
    enhanceForms();
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
