/* ChannelDesk page behaviour shared by every page. No inline scripts: the CSP forbids them. */
(function () {
  "use strict";

  // Forms marked data-autosubmit submit when a select changes (the language switcher).
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // Flash messages fade after a while; errors stay until clicked.
  document.querySelectorAll(".flash").forEach(function (flash) {
    flash.addEventListener("click", function () { flash.remove(); });
    if (!flash.classList.contains("flash-error")) {
      setTimeout(function () { flash.remove(); }, 6000);
    }
  });

  // "Waiting for" clocks: elements with data-since (ISO time) tick every second.
  var LATE_SECONDS = 100;  // the console's warning threshold before the 3-minute mark
  function formatWait(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return (m > 0 ? m + ":" + String(s).padStart(2, "0") : s + "s");
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (isNaN(since)) { return; }
      var seconds = Math.max(0, Math.floor((now - since) / 1000));
      el.textContent = formatWait(seconds);
      el.classList.toggle("is-late", seconds >= LATE_SECONDS);
    });
  }
  tick();
  setInterval(tick, 1000);

  // Realtime: the console namespace, when the Socket.IO client is on the page.
  var indicator = document.querySelector("[data-live-indicator]");
  if (window.io && indicator) {
    var socket = window.io("/desk", { transports: ["websocket", "polling"] });
    indicator.hidden = false;
    socket.on("connect", function () { indicator.classList.add("is-live"); });
    socket.on("disconnect", function () { indicator.classList.remove("is-live"); });
    window.channeldesk = { socket: socket };
  }
})();
