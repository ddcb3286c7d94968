/* The supervisors' live SLA board: reads /api/sla/board, re-reads it within a second of any SLA
   event in the shops' supervisor rooms (sla.watch on /desk), and ticks the clocks every second.
   Server data reaches the page through textContent only. */
(function () {
  "use strict";
  var root = document.getElementById("sla-board");
  if (!root) { return; }
  var S = {};
  try { S = JSON.parse(root.getAttribute("data-strings")) || {}; } catch (e) { S = {}; }
  var url = root.getAttribute("data-url");
  var status = root.querySelector("[data-board-status]");
  var state = { data: null, loading: false, again: false, timer: null };
  window.channeldesk = window.channeldesk || {};
  var board = window.channeldesk.slaBoard = { version: 0, refreshes: 0 };

  function t(key, vars) {
    var value = S;
    key.split(".").forEach(function (part) { value = value == null ? value : value[part]; });
    if (typeof value !== "string") { value = key; }
    return value.replace(/%\((\w+)\)s/g, function (w, name) { return vars && vars[name] != null ? String(vars[name]) : ""; });
  }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text != null) { node.textContent = text; }
    return node;
  }
  function clock(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + String(s).padStart(2, "0");
  }
  function hhmmss(iso) {
    var d = new Date(iso);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }
  function pct(rate) { return rate == null ? t("rate_none") : (rate * 100).toFixed(1) + "%"; }

  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (cell) {
      var td = el("td");
      if (cell instanceof Node) { td.appendChild(cell); } else { td.textContent = cell == null ? "" : String(cell); }
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(selector, rows, emptyText, columns) {
    var body = root.querySelector(selector + " tbody");
    body.textContent = "";
    if (!rows.length) {
      var td = el("td", "muted", emptyText);
      td.colSpan = columns;
      var tr = el("tr");
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function renderClock(span, now) {
    var left = Math.ceil((Date.parse(span.getAttribute("data-deadline")) - now) / 1000);
    var warn = Date.parse(span.getAttribute("data-warn"));
    span.textContent = left >= 0 ? t("left", { time: clock(left) }) : t("over", { time: clock(-left) });
    span.classList.toggle("is-warning", now >= warn && left >= 0);
    span.classList.toggle("is-breached", left < 0);
  }

  function render(data) {
    state.data = data;
    (data.shops || []).forEach(function (shop) {
      var card = root.querySelector('[data-shop-card="' + shop.shop_id + '"]');
      if (!card) { return; }
      card.querySelector('[data-field="rate"]').textContent = pct(shop.rate);
      card.querySelector('[data-field="turns"]').textContent = shop.met + " / " + shop.turns;
      card.querySelector('[data-field="waiting"]').textContent = String(shop.waiting);
      card.querySelector('[data-field="queue"]').textContent = String(shop.queue);
      card.querySelector('[data-field="breaches_last_hour"]').textContent = String(shop.breaches_last_hour);
      card.querySelector('[data-field="rate"]').classList.toggle("is-low", shop.rate != null && shop.rate < 0.8);
    });
    var now = Date.now();
    fill("[data-waiting]", (data.waiting || []).map(function (w) {
      var span = el("span", "sla-countdown");
      span.setAttribute("data-deadline", w.deadline_at);
      span.setAttribute("data-warn", w.warn_at);
      renderClock(span, now);
      var tr = row([w.buyer, w.shop_name, w.assignee_name || t("unassigned"), hhmmss(w.started_at), span]);
      tr.setAttribute("data-turn-id", w.id);
      if (!w.counted) { tr.title = t("not_counted"); tr.classList.add("muted"); }
      return tr;
    }), t("nobody_waiting"), 5);
    fill("[data-breaches]", (data.breaches || []).map(function (b) {
      var tr = row([b.buyer, b.shop_name, b.agent_name || t("unassigned"), hhmmss(b.breached_at),
        b.answered_at ? t("answered_late") : t("still_waiting")]);
      tr.setAttribute("data-turn-id", b.id);
      return tr;
    }), t("no_breaches"), 5);
    fill("[data-agents]", (data.agents || []).map(function (a) {
      var presence = el("span", "presence presence-" + a.presence, t("presence." + a.presence));
      return row([a.name, presence, a.open_count + " / " + a.capacity]);
    }), t("no_agents"), 3);
    board.version += 1;
    root.setAttribute("data-version", String(board.version));
    if (status) { status.textContent = t("updated", { time: hhmmss(data.now) }); }
  }

  function load() {
    if (state.loading) { state.again = true; return; }
    state.loading = true;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (data) { board.refreshes += 1; render(data); })
      .catch(function () { if (status) { status.textContent = t("load_failed"); } })
      .then(function () {
        state.loading = false;
        if (state.again) { state.again = false; load(); }
      });
  }
  // Many events at once (a burst of buyers): one read for all of them, at most 150 ms later.
  function soon() {
    if (state.timer) { return; }
    state.timer = setTimeout(function () { state.timer = null; load(); }, 150);
  }

  load();
  setInterval(function () {
    var now = Date.now();
    root.querySelectorAll("[data-waiting] .sla-countdown").forEach(function (span) { renderClock(span, now); });
  }, 1000);
  setInterval(load, 30000);  // a safety net only: events drive the board

  var socket = window.channeldesk.socket;
  if (socket) {
    var watch = function () { socket.emit("sla.watch", {}, function () { load(); }); };
    socket.on("connect", watch);
    if (socket.connected) { watch(); }
    socket.on("sla.turn", function (data) {
      board.lastEvent = data;
      soon();
    });
    socket.on("sla.changed", soon);
    socket.on("presence.changed", soon);
  }
})();
