/* Platform deadlines tick down: elements with data-deadline (ISO time) show the time left, every
   second. Words come from #deadline-strings (the CSP forbids inline scripts). Pages that add
   deadlines later call window.channeldesk.tickDeadlines(). */
(function () {
  "use strict";
  var holder = document.getElementById("deadline-strings");
  var strings = {};
  try { strings = JSON.parse((holder && holder.getAttribute("data-strings")) || "{}"); } catch (e) { strings = {}; }
  var URGENT_SECONDS = 6 * 3600;

  function fill(text, vars) {
    return String(text || "").replace(/%\((\w+)\)s/g, function (whole, name) {
      return vars[name] == null ? whole : String(vars[name]);
    });
  }
  function pad(n) { return String(n).padStart(2, "0"); }
  function format(seconds) {
    if (seconds <= 0) { return strings.overdue || "overdue"; }
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    var time = d > 0 ? fill(strings.days || "%(n)sd %(h)sh", { n: d, h: h }) : h + ":" + pad(m) + ":" + pad(s);
    return fill(strings.left || "%(time)s", { time: time });
  }
  function tick(root) {
    var now = Date.now();
    (root || document).querySelectorAll("[data-deadline]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-deadline"));
      if (isNaN(at)) { return; }
      var seconds = Math.floor((at - now) / 1000);
      var text = format(seconds);
      if (el.textContent !== text) { el.textContent = text; }
      el.classList.toggle("is-urgent", seconds > 0 && seconds < URGENT_SECONDS);
      el.classList.toggle("is-overdue", seconds <= 0);
    });
  }
  tick();
  setInterval(tick, 1000);
  window.channeldesk = window.channeldesk || {};
  window.channeldesk.tickDeadlines = tick;
})();
