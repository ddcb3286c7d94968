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

  // "Waiting for" clocks: elements with data-since (ISO time) tick every second. Pages that add
  // clocks later (the console's live inbox) call window.channeldesk.tickClocks() to show them at once.
  var LATE_SECONDS = 100;  // the console's warning threshold before the 3-minute mark
  function formatWait(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return (m > 0 ? m + ":" + String(s).padStart(2, "0") : s + "s");
  }
  function tick(root) {
    var now = Date.now();
    (root || document).querySelectorAll("[data-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (isNaN(since)) { return; }
      var seconds = Math.max(0, Math.floor((now - since) / 1000));
      var text = formatWait(seconds);
      if (el.textContent !== text) { el.textContent = text; }
      el.classList.toggle("is-late", seconds >= LATE_SECONDS);
    });
  }
  tick();
  setInterval(tick, 1000);

  var channeldesk = window.channeldesk = { socket: null, tickClocks: tick, hello: null };

  // Realtime: the console namespace, when the Socket.IO client is on the page.
  var indicator = document.querySelector("[data-live-indicator]");
  if (window.io && indicator) {
    var socket = window.io("/desk", { transports: ["websocket", "polling"] });
    channeldesk.socket = socket;
    indicator.hidden = false;

    var presenceSelect = document.querySelector("[data-presence-select]");
    var heartbeat = null;
    var myId = null;

    socket.on("connect", function () {
      indicator.classList.add("is-live");
      if (heartbeat) { clearInterval(heartbeat); }
      // Keeps this connection counted as present (the server drops silent ones).
      heartbeat = setInterval(function () {
        if (socket.connected) { socket.emit("heartbeat", {}, function () {}); }
      }, 25000);
    });
    socket.on("disconnect", function () {
      indicator.classList.remove("is-live");
      if (heartbeat) { clearInterval(heartbeat); heartbeat = null; }
      if (presenceSelect) { presenceSelect.disabled = true; }
    });
    // Signed out (in this tab or another): the server closes the socket; go to the sign-in page
    // instead of a console that can no longer act.
    socket.on("session.ended", function () {
      socket.close();
      window.location.assign("/login");
    });
    socket.on("hello", function (hello) {
      channeldesk.hello = hello || {};
      myId = hello && hello.user ? hello.user.id : (hello ? hello.user_id : null);
      if (presenceSelect && hello && (hello.presence === "online" || hello.presence === "away")) {
        presenceSelect.value = hello.presence;
        presenceSelect.disabled = false;
      }
    });

    if (presenceSelect) {
      presenceSelect.addEventListener("change", function () {
        var wanted = presenceSelect.value;
        var previous = wanted === "online" ? "away" : "online";
        presenceSelect.disabled = true;
        var settled = false;
        var timer = setTimeout(function () {
          if (settled) { return; }
          settled = true;
          presenceSelect.value = previous;
          presenceSelect.disabled = !socket.connected;
        }, 10000);
        socket.emit("presence.set", { presence: wanted }, function (ack) {
          if (settled) { return; }
          settled = true;
          clearTimeout(timer);
          if (ack && ack.ok) {
            presenceSelect.value = ack.presence || wanted;
          } else {
            presenceSelect.value = previous;
          }
          presenceSelect.disabled = !socket.connected;
        });
      });
      // Every tab of the user follows a change made in one of them.
      socket.on("presence.changed", function (data) {
        if (data && myId !== null && data.user_id === myId &&
            (data.presence === "online" || data.presence === "away")) {
          presenceSelect.value = data.presence;
        }
      });
    }
  }
})();
