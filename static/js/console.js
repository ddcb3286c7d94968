/* ChannelDesk agent console: live inbox, chat pane, composer, sidebar (contract: docs/api.md).
   Every user-visible string comes from the template (data-strings); buyer and server data only ever
   reach the page through textContent and attributes, never innerHTML (the one exception is the
   sidebar fragment, which is our own server-rendered template). */
(function () {
  "use strict";

  var dataEl = document.getElementById("console-data");
  if (!dataEl) { return; }

  // --- configuration ---------------------------------------------------------------------------

  function jsonAttr(el, name, fallback) {
    try { return JSON.parse(el.getAttribute(name)) || fallback; } catch (e) { return fallback; }
  }
  var S = jsonAttr(dataEl, "data-strings", {});
  var ME = jsonAttr(dataEl, "data-user", {});
  var SHOPS = {};
  jsonAttr(dataEl, "data-shops", []).forEach(function (shop) { SHOPS[shop.id] = shop; });
  var VIEWS = ["mine", "unassigned", "all", "resolved"];
  var ACK_TIMEOUT_MS = 10000;
  var MAX_TEXT = 1000;
  var MAX_IMAGE_BYTES = 10 * 1024 * 1024;
  var IMAGE_TYPES = ["image/jpeg", "image/png", "image/gif", "image/webp"];
  var REPLY_LIMIT = 5;
  var BASE_TITLE = document.title;
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var socket = window.channeldesk && window.channeldesk.socket;

  function t(key, vars) {
    var value = S;
    key.split(".").forEach(function (part) { value = value == null ? value : value[part]; });
    if (typeof value !== "string") { value = key; }
    if (!vars) { return value; }
    return value.replace(/%\((\w+)\)s/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(vars, name) && vars[name] != null ? String(vars[name]) : "";
    });
  }

  // --- small helpers -----------------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text != null) { node.textContent = text; }
    return node;
  }
  function q(selector, root) { return (root || document).querySelector(selector); }
  function qa(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  function newRequestId() {
    if (window.crypto && window.crypto.randomUUID) { return window.crypto.randomUUID().replace(/-/g, ""); }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function timeOf(iso) { var ms = Date.parse(iso || ""); return isNaN(ms) ? 0 : ms; }

  function safeImageUrl(url) {
    if (typeof url !== "string") { return null; }
    if (/^\/(?!\/)/.test(url) || /^https?:\/\//i.test(url)) { return url; }
    return null;
  }

  function customerName(summary) {
    var c = (summary && summary.customer) || {};
    return c.nickname || (c.openid ? c.openid.slice(0, 10) : "#" + (summary ? summary.id : ""));
  }

  function isMine(summary) {
    return !!(summary && summary.assignee && summary.assignee.id === ME.id);
  }

  // Times in the shop's zone: HH:MM:SS today, with the date otherwise.
  var formatters = {};
  function partsIn(date, tz) {
    var f = formatters[tz];
    if (f === undefined) {
      try {
        f = new Intl.DateTimeFormat("en-GB", {
          timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
        });
      } catch (e) {
        f = null; // an unknown zone: fall back to the desk's default
      }
      formatters[tz] = f;
    }
    if (!f) { return tz === "Asia/Shanghai" ? {} : partsIn(date, "Asia/Shanghai"); }
    var out = {};
    f.formatToParts(date).forEach(function (p) { out[p.type] = p.value; });
    return out;
  }
  function shopTz(shopId) { var shop = SHOPS[shopId]; return (shop && shop.timezone) || "Asia/Shanghai"; }
  function formatTime(iso, shopId, short) {
    var ms = timeOf(iso);
    if (!ms) { return ""; }
    var tz = shopTz(shopId);
    var p = partsIn(new Date(ms), tz), today = partsIn(new Date(), tz);
    var time = p.hour + ":" + p.minute + (short ? "" : ":" + p.second);
    if (p.year === today.year && p.month === today.month && p.day === today.day) { return time; }
    var date = p.month + "-" + p.day;
    if (short) { return p.year === today.year ? date : p.year + "-" + date; }
    return (p.year === today.year ? date : p.year + "-" + date) + " " + time;
  }

  function api(path, options) {
    options = options || {};
    var headers = { "Accept": "application/json" };
    if (options.method && options.method !== "GET") { headers["X-CSRFToken"] = CSRF; }
    return fetch(path, {
      method: options.method || "GET",
      credentials: "same-origin",
      headers: headers,
      body: options.body,
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var error = new Error((data && data.error && data.error.message) || response.status + " " + response.statusText);
          error.code = (data && data.error && data.error.code) || "http_" + response.status;
          throw error;
        }
        return data || {};
      });
    }, function () {
      var error = new Error(t("network_error"));
      error.code = "network";
      throw error;
    });
  }

  // A socket event with an acknowledgement. onTimeout runs when no answer came within 10 s; a late
  // answer still reaches onAck (the server did act), with late = true.
  function emitAck(event, payload, onAck, onTimeout) {
    if (!socket) {
      if (onTimeout) { setTimeout(onTimeout, 0); }
      return;
    }
    var timedOut = false, answered = false;
    var timer = setTimeout(function () {
      if (answered) { return; }
      timedOut = true;
      if (onTimeout) { onTimeout(); }
    }, ACK_TIMEOUT_MS);
    socket.emit(event, payload, function (ack) {
      if (answered) { return; }
      answered = true;
      clearTimeout(timer);
      if (!ack || typeof ack !== "object") { ack = { ok: false, error: { code: "invalid", message: "" } }; }
      if (onAck) { onAck(ack, timedOut); }
    });
  }
  function errorText(ack) {
    var error = (ack && ack.error) || {};
    return error.message || error.code || t("timeout");
  }

  // --- elements ----------------------------------------------------------------------------------

  var inboxList = q("[data-inbox-list]");
  var inboxStatus = q("[data-inbox-status]");
  var inboxMore = q("[data-inbox-more]");
  var loadMoreBtn = q("[data-load-more]");
  var tabsNav = q("[data-inbox-tabs]");
  var chipsBox = q("[data-shop-chips]");
  var searchForm = q("[data-inbox-search]");
  var searchInput = q("[data-inbox-q]");
  var chatEmpty = q("[data-chat-empty]");
  var chatPane = q("[data-chat-pane]");
  var chatName = q("[data-chat-name]");
  var chatShop = q("[data-chat-shop]");
  var chatAssignee = q("[data-chat-assignee]");
  var chatTags = q("[data-chat-tags]");
  var chatResolved = q("[data-chat-resolved]");
  var chatError = q("[data-chat-error]");
  var takeBtn = q("[data-take]");
  var assignSelect = q("[data-assign]");
  var resolveBtn = q("[data-resolve]");
  var reopenBtns = qa("[data-reopen]");
  var headerReopen = q(".chat-actions [data-reopen]");
  var messagesList = q("[data-messages]");
  var resolvedNotice = q("[data-resolved-notice]");
  var composer = q("[data-composer]");
  var textarea = q("[data-composer-text]");
  var sendBtn = q("[data-send]");
  var imageBtn = q("[data-image-button]");
  var imageInput = q("[data-image-input]");
  var budgetEl = q("[data-budget]");
  var warningEl = q("[data-composer-warning]");
  var composerErrorEl = q("[data-composer-error]");
  var modeBtns = qa("[data-mode]");
  var qrList = q("[data-quick-replies]");
  var sidebar = q("[data-sidebar]");
  var banner = q("[data-reconnect-banner]");
  var flashes = q(".flashes");

  // --- state -------------------------------------------------------------------------------------

  var inbox = {
    view: "mine", shop: null, q: "",
    rows: [],               // summaries in display order (newest first)
    els: new Map(),         // id -> <li>
    hasMore: false, loading: false, token: 0, loadedOnce: false,
    counts: {},
  };
  var known = new Map();    // id -> latest summary seen (for counts)
  var mineUnread = new Map(); // id -> unread count of my open conversations (page title)
  var conv = null;          // the open conversation
  var convToken = 0;
  var placeholders = new Map(); // key -> local message not yet confirmed by the server (any conversation)
  var drafts = new Map();   // conversation id -> unsent text
  var modes = new Map();    // conversation id -> "reply" | "note"
  var composerErrors = new Map(); // conversation id -> error text to show when it is open
  var localSeq = 0;
  var agentsCache = {};     // shop id -> {agents, at}
  var quickReplies = {};    // shop id -> {list, at, promise}
  var connectCount = 0;

  // --- inbox -------------------------------------------------------------------------------------

  function readLocation() {
    var params = new URLSearchParams(window.location.search);
    var view = params.get("view");
    var shop = parseInt(params.get("shop") || "", 10);
    var match = /^\/conversations\/(\d+)\/?$/.exec(window.location.pathname);
    return {
      view: VIEWS.indexOf(view) >= 0 ? view : "mine",
      shop: SHOPS[shop] ? shop : null,
      q: (params.get("q") || "").trim().slice(0, 64),
      conversationId: match ? parseInt(match[1], 10) : null,
    };
  }

  function queryString() {
    var params = new URLSearchParams();
    if (inbox.view !== "mine") { params.set("view", inbox.view); }
    if (inbox.shop) { params.set("shop", String(inbox.shop)); }
    if (inbox.q) { params.set("q", inbox.q); }
    var text = params.toString();
    return text ? "?" + text : "";
  }
  function currentPath() { return conv ? "/conversations/" + conv.id : "/"; }

  // --- the 3-minute manual reply clock (docs/sla.md) ---------------------------------------------
  // Each waiting conversation counts down to its shop's threshold. At the warning threshold the row
  // jumps to the top (warned rows first, the nearest deadline first), is highlighted, and a sound
  // plays once per buyer turn. The shops' thresholds and the agent's own rate come from /api/sla/me.
  var SLA = { policies: {}, alerted: new Set(), sound: null, loading: false, again: null };
  var SLA_SOUND = dataEl.getAttribute("data-sla-sound") || "";
  var slaMine = document.querySelector("[data-sla-mine]");

  function slaPolicy(shopId) {
    return SLA.policies[String(shopId)] || { threshold_seconds: 180, warning_seconds: 100 };
  }
  function slaTimes(s) {
    if (!s || s.status !== "open" || !s.waiting_since) { return null; }
    var start = timeOf(s.waiting_since), p = slaPolicy(s.shop_id);
    return {
      warn: start + Math.min(p.warning_seconds, p.threshold_seconds) * 1000,
      deadline: start + p.threshold_seconds * 1000,
      key: s.id + "@" + s.waiting_since
    };
  }
  function slaWarned(s, now) {
    var times = slaTimes(s);
    return times && now >= times.warn ? times : null;
  }

  function compareSummaries(a, b) {
    var now = Date.now(), wa = slaWarned(a, now), wb = slaWarned(b, now);
    if (wa && !wb) { return -1; }
    if (wb && !wa) { return 1; }
    if (wa && wb && wa.deadline !== wb.deadline) { return wa.deadline - wb.deadline; }
    var d = timeOf(b.last_message_at) - timeOf(a.last_message_at);
    return d !== 0 ? d : b.id - a.id;
  }

  function matchesView(s) {
    if (!s) { return false; }
    if (inbox.shop && s.shop_id !== inbox.shop) { return false; }
    if (inbox.q) {
      var c = s.customer || {};
      var nick = (c.nickname || "").toLowerCase();
      if (nick.indexOf(inbox.q.toLowerCase()) === -1 && c.openid !== inbox.q) { return false; }
    }
    switch (inbox.view) {
      case "mine": return s.status === "open" && isMine(s);
      case "unassigned": return s.status === "open" && !s.assignee;
      case "all": return s.status === "open";
      case "resolved": return s.status === "resolved";
    }
    return false;
  }

  function renderRow(s) {
    var li = el("li");
    li.dataset.id = s.id;
    var a = el("a", "conversation-item");
    a.href = "/conversations/" + s.id;
    a.dataset.conversationId = s.id;
    if (conv && conv.id === s.id) { a.classList.add("is-selected"); a.setAttribute("aria-current", "true"); }
    if (s.unread_count) { a.classList.add("has-unread"); }

    var top = el("span", "conversation-top");
    top.appendChild(el("strong", "nickname", customerName(s)));
    var time = el("time", "conversation-time muted", formatTime(s.last_message_at, s.shop_id, true));
    time.dateTime = s.last_message_at || "";
    top.appendChild(time);
    a.appendChild(top);

    var middle = el("span", "conversation-preview");
    var preview = el("span", "preview-text", s.last_message_preview || "");
    if (s.last_message_direction === "outbound") { preview.classList.add("is-outbound"); }
    middle.appendChild(preview);
    if (s.unread_count) {
      var unread = el("span", "unread", String(s.unread_count));
      unread.title = t("unread");
      middle.appendChild(unread);
    }
    a.appendChild(middle);

    var meta = el("span", "conversation-meta");
    var left = el("span", "conversation-badges");
    var shop = SHOPS[s.shop_id];
    left.appendChild(el("span", "badge badge-shop", (shop && shop.name) || s.shop_name || ""));
    if (s.queued_at && s.status === "open" && !s.assignee) {
      var queued = el("span", "badge badge-warn queued", t("queued"));
      queued.title = t("queued_title");
      left.appendChild(queued);
    }
    if (inbox.view !== "mine" && s.assignee) {
      var who = el("span", "assignee-name muted", s.assignee.name || "");
      who.title = t("assigned_to", { name: s.assignee.name || "" });
      left.appendChild(who);
    }
    meta.appendChild(left);
    if (s.waiting_since && s.status === "open") {
      var waiting = el("span", "waiting");
      waiting.setAttribute("data-since", s.waiting_since);
      waiting.title = t("waiting_title", { time: formatTime(s.waiting_since, s.shop_id) });
      meta.appendChild(waiting);
    }
    var times = slaTimes(s);
    if (times) {
      var countdown = el("span", "sla-countdown");
      countdown.setAttribute("data-sla-deadline", String(times.deadline));
      countdown.setAttribute("data-sla-warn", String(times.warn));
      countdown.title = t("sla_title");
      meta.appendChild(countdown);
      if (Date.now() >= times.warn) { a.classList.add("is-sla-warning"); }
      slaRender(countdown, Date.now());
    }
    a.appendChild(meta);
    li.appendChild(a);
    return li;
  }

  function removeRow(id) {
    var li = inbox.els.get(id);
    if (li) { li.remove(); inbox.els.delete(id); }
    var index = inbox.rows.findIndex(function (r) { return r.id === id; });
    if (index >= 0) { inbox.rows.splice(index, 1); }
  }

  function placeRow(s, fromPage) {
    var hadFocus = false;
    var old = inbox.els.get(s.id);
    if (old) { hadFocus = old.contains(document.activeElement); }
    removeRow(s.id);
    var index = inbox.rows.findIndex(function (r) { return compareSummaries(s, r) < 0; });
    if (index === -1 && !fromPage && inbox.hasMore && inbox.rows.length) {
      return; // older than the loaded page: "Load more" brings it
    }
    var li = renderRow(s);
    if (index === -1) {
      inbox.rows.push(s);
      inboxList.appendChild(li);
    } else {
      var before = inbox.els.get(inbox.rows[index].id);
      inbox.rows.splice(index, 0, s);
      inboxList.insertBefore(li, before || null);
    }
    inbox.els.set(s.id, li);
    if (hadFocus) { li.querySelector("a").focus(); }
  }

  function renderInboxEmpty() {
    var empty = q("[data-inbox-empty]", inboxList);
    if (inbox.rows.length || inbox.loading) {
      if (empty) { empty.remove(); }
      return;
    }
    if (empty) { return; }
    var li = el("li");
    li.setAttribute("data-inbox-empty", "");
    var box = el("div", "empty");
    box.appendChild(el("p", "empty-title", t("no_conversations")));
    box.appendChild(el("p", "muted", t("no_conversations_hint")));
    li.appendChild(box);
    inboxList.appendChild(li);
  }

  function renderTabs() {
    qa("[data-view]", tabsNav).forEach(function (a) {
      if (a.dataset.view === inbox.view) { a.setAttribute("aria-current", "page"); } else { a.removeAttribute("aria-current"); }
    });
    if (chipsBox) {
      qa("[data-shop]", chipsBox).forEach(function (a) {
        var shop = a.dataset.shop ? parseInt(a.dataset.shop, 10) : null;
        if (shop === inbox.shop) { a.setAttribute("aria-current", "true"); } else { a.removeAttribute("aria-current"); }
      });
    }
    if (searchInput && document.activeElement !== searchInput) { searchInput.value = inbox.q; }
  }

  function renderCounts() {
    qa("[data-count]", tabsNav).forEach(function (span) {
      var n = inbox.counts[span.dataset.count];
      span.textContent = typeof n === "number" && n > 0 ? String(n) : "";
    });
  }

  function rememberSummary(s) {
    known.set(s.id, s);
    if (known.size > 3000) {
      var drop = known.size - 2500;
      known.forEach(function (value, key) { if (drop-- > 0) { known.delete(key); } });
    }
    if (s.status === "open" && isMine(s)) { mineUnread.set(s.id, s.unread_count || 0); } else { mineUnread.delete(s.id); }
    updateTitle();
  }

  function updateTitle() {
    var total = 0;
    mineUnread.forEach(function (n) { total += n; });
    document.title = (total > 0 ? "(" + total + ") " : "") + BASE_TITLE;
  }

  function inboxParams(extra) {
    var params = new URLSearchParams({ view: inbox.view });
    if (inbox.shop) { params.set("shop", String(inbox.shop)); }
    if (inbox.q) { params.set("q", inbox.q); }
    Object.keys(extra || {}).forEach(function (k) { params.set(k, extra[k]); });
    return params.toString();
  }

  function loadInbox(append) {
    var token = ++inbox.token;
    var extra = {};
    if (append && inbox.rows.length) {
      var last = inbox.rows[inbox.rows.length - 1];
      extra.before = last.last_message_at;
      extra.before_id = last.id; // rows sharing that time continue by id: none is skipped
    }
    inbox.loading = true;
    inboxStatus.textContent = t("loading");
    if (!append) { loadMoreBtn.disabled = true; }
    // Events that come while the page is on its way may be newer than the page: kept, re-applied.
    var during = inbox.during = (!append && inbox.during) || []; // (setView starts it at the switch)
    return api("/api/inbox?" + inboxParams(extra)).then(function (data) {
      if (token !== inbox.token) { return; }
      inbox.during = null;
      inbox.loading = false;
      inbox.loadedOnce = true;
      inboxStatus.textContent = "";
      if (!append) {
        inbox.rows = [];
        inbox.els.clear();
        inboxList.textContent = "";
      }
      var fromPage = {};
      (data.conversations || []).forEach(function (s) {
        fromPage[s.id] = s;
        rememberSummary(s);
        placeRow(s, true);
      });
      during.forEach(function (s) {
        var paged = fromPage[s.id];
        if (paged && typeof paged.last_seq === "number" && typeof s.last_seq === "number" && paged.last_seq > s.last_seq) { return; }
        rememberSummary(s);
        if (matchesView(s)) { placeRow(s, false); } else { removeRow(s.id); }
      });
      inbox.hasMore = !!data.has_more;
      inboxMore.hidden = !inbox.hasMore;
      loadMoreBtn.disabled = false;
      if (data.counts) { inbox.counts = data.counts; renderCounts(); }
      renderInboxEmpty();
      tickClocks();
    }, function (error) {
      if (token !== inbox.token) { return; }
      inbox.during = null;
      inbox.loading = false;
      loadMoreBtn.disabled = false;
      inboxStatus.textContent = t("load_failed", { error: error.message });
      renderInboxEmpty();
    });
  }

  // Counts of the views come from the server; events move them between views when we know where a
  // conversation was, otherwise a (throttled) refresh asks the server again.
  var countsTimer = null, countsAt = 0;
  function refreshCountsSoon() {
    if (countsTimer) { return; }
    var wait = Math.max(1000, 5000 - (Date.now() - countsAt));
    countsTimer = setTimeout(function () {
      countsTimer = null;
      countsAt = Date.now();
      api("/api/inbox?" + inboxParams()).then(function (data) {
        if (data.counts) { inbox.counts = data.counts; renderCounts(); }
      }, function () {});
    }, wait);
  }
  function countKeys(s) {
    var keys = [];
    if (!s || s.status !== "open") { return keys; }
    if (inbox.shop && s.shop_id !== inbox.shop) { return keys; }
    keys.push("all");
    if (!s.assignee) { keys.push("unassigned"); }
    if (isMine(s)) { keys.push("mine"); }
    return keys;
  }
  function adjustCounts(before, after) {
    if (inbox.q) { refreshCountsSoon(); return; }
    var changed = false;
    countKeys(before).forEach(function (k) { if (typeof inbox.counts[k] === "number") { inbox.counts[k] = Math.max(0, inbox.counts[k] - 1); changed = true; } });
    countKeys(after).forEach(function (k) { if (typeof inbox.counts[k] === "number") { inbox.counts[k] += 1; changed = true; } });
    if (changed) { renderCounts(); }
  }

  function applySummary(s, reason) {
    if (!s || typeof s.id !== "number") { return; }
    var before = known.get(s.id);
    if (before && typeof before.last_seq === "number" && typeof s.last_seq === "number" && s.last_seq < before.last_seq) {
      return; // an older state arriving late
    }
    if (before || reason === "new") { adjustCounts(before, s); } else { refreshCountsSoon(); }
    if (inbox.during) { inbox.during.push(s); }
    rememberSummary(s);
    if (matchesView(s)) {
      placeRow(s, false);
    } else {
      removeRow(s.id);
    }
    renderInboxEmpty();
    tickClocks();
    if (conv && conv.id === s.id) { setConversationSummary(s); }
  }

  function tickClocks() {
    if (window.channeldesk && window.channeldesk.tickClocks) { window.channeldesk.tickClocks(); }
  }

  function watchInbox(then) {
    if (!socket || !socket.connected) { if (then) { then(); } return; }
    var payload = { view: inbox.view, shop_id: inbox.shop || null };
    var done = false;
    emitAck("inbox.watch", payload, function () {
      if (!done) { done = true; if (then) { then(); } }
    }, function () {
      if (!done) { done = true; if (then) { then(); } }
    });
  }

  function setView(changes, options) {
    options = options || {};
    var changed = false;
    ["view", "shop", "q"].forEach(function (k) {
      if (Object.prototype.hasOwnProperty.call(changes, k) && changes[k] !== inbox[k]) { inbox[k] = changes[k]; changed = true; }
    });
    if (!changed && !options.force) { return; }
    renderTabs();
    if (!options.fromHistory) {
      window.history.replaceState(window.history.state, "", currentPath() + queryString());
    }
    inbox.rows = [];
    inbox.els.clear();
    inboxList.textContent = "";
    inboxMore.hidden = true;
    inbox.token++;  // drop answers for the previous view
    inbox.during = [];
    inbox.loading = true;
    inboxStatus.textContent = t("loading");
    watchInbox(function () { loadInbox(false); });
  }

  function loadMineUnread() {
    return api("/api/inbox?view=mine").then(function (data) {
      var seen = new Set();
      (data.conversations || []).forEach(function (s) { seen.add(s.id); rememberSummary(s); });
      if (!data.has_more) {
        Array.from(mineUnread.keys()).forEach(function (id) { if (!seen.has(id)) { mineUnread.delete(id); } });
      }
      updateTitle();
    }, function () {});
  }

  // --- the open conversation ---------------------------------------------------------------------

  function messageKey(m) {
    if (m._key) { return m._key; }
    return "m" + m.id;
  }

  function compareMessages(a, b) {
    var aLocal = !a.seq, bLocal = !b.seq;
    if (aLocal !== bLocal) { return aLocal ? 1 : -1; }
    if (!aLocal) { return a.seq - b.seq || a.id - b.id; }
    return (a._local || 0) - (b._local || 0);
  }

  function isNote(m) { return m.direction === "internal"; }

  function stateLine(m) {
    var wrap = el("span", "state state-" + m.delivery_state);
    if (m.delivery_state === "pending") {
      wrap.textContent = t("sending");
    } else if (m.delivery_state === "sent") {
      wrap.textContent = t("sent");
    } else if (m.delivery_state === "failed") {
      wrap.appendChild(el("span", "state-reason", m.delivery_error ? t("failed", { reason: m.delivery_error }) : t("failed_unknown")));
      var retry = el("button", "btn btn-small btn-retry", t("retry"));
      retry.type = "button";
      retry.dataset.retryId = m.id;
      wrap.appendChild(retry);
    } else if (m.delivery_state === "unreached") {
      wrap.appendChild(el("span", "state-reason", t("unreached")));
      var resend = el("button", "btn btn-small btn-retry", t("retry"));
      resend.type = "button";
      resend.dataset.resendKey = m._key;
      wrap.appendChild(resend);
    } else {
      return null;
    }
    return wrap;
  }

  function renderBubble(m) {
    var bubble = el("div", "bubble");
    var body = m.body || {};
    switch (m.msg_type) {
      case "text":
      case "note":
        bubble.textContent = m.text || "";
        break;
      case "image": {
        var url = safeImageUrl(m.image_url);
        if (m._uploading || !url) {
          bubble.appendChild(el("span", "muted", m._uploading ? t("uploading") : "[" + t("image") + "]"));
        } else {
          var link = el("a", "image-link");
          link.href = url;
          link.target = "_blank";
          link.rel = "noopener noreferrer";
          link.title = t("open_image");
          var img = el("img", "message-image");
          img.src = url;
          img.alt = t("image");
          img.loading = "lazy";
          img.addEventListener("load", keepBottomOnLoad);
          link.appendChild(img);
          bubble.appendChild(link);
        }
        bubble.classList.add("bubble-media");
        break;
      }
      case "order_share": {
        var card = el("span", "share-card");
        card.appendChild(el("span", "share-kind", t("order")));
        card.appendChild(el("span", "mono", body.order_id || m.text || ""));
        bubble.appendChild(card);
        break;
      }
      case "product_share": {
        var product = el("span", "share-card");
        product.appendChild(el("span", "share-kind", t("product_card")));
        var title = body.title || body.product_title || body.name || m.text;
        if (title) { product.appendChild(el("span", "share-title", title)); }
        if (body.product_id) { product.appendChild(el("span", "mono muted", t("product_id", { id: body.product_id }))); }
        bubble.appendChild(product);
        break;
      }
      default:
        bubble.appendChild(el("span", "muted", "[" + (m.msg_type || "?") + "]"));
        if (m.text) { bubble.appendChild(document.createTextNode(" " + m.text)); }
    }
    return bubble;
  }

  function renderMessage(m) {
    var li = el("li", "message message-" + m.direction + " message-" + m.sender_kind);
    li.dataset.key = messageKey(m);
    if (m.id) { li.dataset.id = m.id; }
    if (m.seq) { li.dataset.seq = m.seq; }
    if (m.request_id) { li.dataset.requestId = m.request_id; }
    if (m.delivery_state) { li.dataset.state = m.delivery_state; }
    if (isNote(m)) {
      li.classList.add(m.sender_kind === "system" ? "message-system" : "message-note");
      li.appendChild(el("span", "message-label", m.sender_kind === "system" ? t("system") : t("internal_note")));
    }
    li.appendChild(renderBubble(m));
    var meta = el("div", "message-meta");
    var bits = [];
    if (m.sender_kind === "auto") {
      bits.push(el("span", "badge badge-auto", t("auto_reply")));
    } else if ((m.sender_kind === "agent") && m.sender && m.sender.name) {
      bits.push(el("span", "sender", m.sender.name));
    }
    if (m.created_at) {
      var time = el("time", null, formatTime(m.created_at, m.shop_id || (conv ? conv.shopId : null)));
      time.dateTime = m.created_at;
      bits.push(time);
    }
    if (m.direction === "outbound") {
      var state = stateLine(m);
      if (state) { bits.push(state); }
    } else if (m._key && m.delivery_state === "unreached") {
      bits.push(stateLine(m));
    } else if (m._key && m._inFlight) {
      bits.push(el("span", "state state-pending", t("sending")));
    }
    bits.forEach(function (bit, i) {
      if (i > 0) { meta.appendChild(document.createTextNode(" · ")); }
      meta.appendChild(bit);
    });
    li.appendChild(meta);
    return li;
  }

  function nearBottom() {
    return messagesList.scrollHeight - messagesList.scrollTop - messagesList.clientHeight < 80;
  }
  function scrollToBottom() { messagesList.scrollTop = messagesList.scrollHeight; }
  function keepBottomOnLoad() { if (conv && conv.stickBottom) { scrollToBottom(); } }

  function topMarker() {
    var marker = q("[data-messages-top]", messagesList);
    if (!marker) {
      marker = el("li", "messages-top muted");
      marker.setAttribute("data-messages-top", "");
      messagesList.insertBefore(marker, messagesList.firstChild);
    }
    if (!conv || !conv.loaded) {
      marker.textContent = t("loading");
    } else if (conv.loadingOlder) {
      marker.textContent = t("loading_earlier");
    } else if (conv.hasMoreOlder) {
      marker.textContent = "";
    } else {
      marker.textContent = conv.order.length ? t("conversation_start") : t("no_messages");
    }
    return marker;
  }

  // Insert or replace one message, in seq order (local ones last).
  function putMessage(m) {
    if (!conv) { return; }
    var key = messageKey(m);
    var stick = nearBottom();
    var oldEl = conv.els.get(key);
    var oldIndex = conv.order.indexOf(key);
    if (oldIndex >= 0) { conv.order.splice(oldIndex, 1); }
    conv.msgs.set(key, m);
    var index = conv.order.length;
    while (index > 0 && compareMessages(conv.msgs.get(conv.order[index - 1]), m) > 0) { index--; }
    conv.order.splice(index, 0, key);
    var li = renderMessage(m);
    if (oldEl && oldIndex === index) {
      oldEl.replaceWith(li);
    } else {
      if (oldEl) { oldEl.remove(); }
      var nextKey = conv.order[index + 1];
      var next = nextKey ? conv.els.get(nextKey) : null;
      messagesList.insertBefore(li, next || null);
    }
    conv.els.set(key, li);
    if (m.seq && m.seq > conv.lastSeq) { conv.lastSeq = m.seq; }
    if (stick && !conv.loadingOlder) { scrollToBottom(); }
  }

  function removeMessage(key) {
    if (!conv) { return; }
    var li = conv.els.get(key);
    if (li) { li.remove(); }
    conv.els.delete(key);
    conv.msgs.delete(key);
    var index = conv.order.indexOf(key);
    if (index >= 0) { conv.order.splice(index, 1); }
  }

  var STATE_RANK = { pending: 1, failed: 1, sent: 2, received: 2 };
  // A message from the server (ack, event or fetch): replaces its local placeholder, merges by id.
  function mergeMessage(m, localKey) {
    if (!m || typeof m.id !== "number") { return; }
    if (m.request_id) { placeholders.delete("r" + m.request_id); }
    if (localKey) { placeholders.delete(localKey); }
    if (!conv || m.conversation_id !== conv.id) { return; }
    if (localKey) { removeMessage(localKey); }
    if (m.request_id) { removeMessage("r" + m.request_id); }
    if (isNote(m) && m.sender && m.sender.id === ME.id) {
      // A note's event can overtake its acknowledgement: it is the same note.
      for (var i = 0; i < conv.order.length; i++) {
        var p = conv.msgs.get(conv.order[i]);
        if (p && p._key && p._note && (p.text || "").trim() === (m.text || "").trim() && !p._merged) {
          p._merged = true;
          placeholders.delete(p._key);
          removeMessage(p._key);
          break;
        }
      }
    }
    var existing = conv.msgs.get("m" + m.id);
    if (existing && (STATE_RANK[existing.delivery_state] || 0) > (STATE_RANK[m.delivery_state] || 0)) {
      m = Object.assign({}, m, { delivery_state: existing.delivery_state, delivery_error: existing.delivery_error, sent_at: existing.sent_at });
    }
    putMessage(m);
    renderComposerState();
    watchPending();
  }

  function addLocal(m) {
    placeholders.set(m._key, m);
    if (conv && conv.id === m.conversation_id) {
      putMessage(m);
      scrollToBottom();
    }
  }

  function setConversationSummary(s) {
    if (!conv || s.id !== conv.id) { return; }
    if (conv.summary && typeof conv.summary.last_seq === "number" && typeof s.last_seq === "number" && s.last_seq < conv.summary.last_seq) {
      return;
    }
    conv.summary = s;
    conv.shopId = s.shop_id;
    if (typeof s.last_seq === "number" && s.last_seq > conv.lastSeq && conv.loaded) {
      // The summary knows a newer message than we have (an event was missed): fetch it.
      resyncSoon();
    }
    renderHeader();
    renderComposerState();
  }

  function renderHeader() {
    var s = conv && conv.summary;
    if (!s) { return; }
    chatName.textContent = customerName(s);
    var shop = SHOPS[s.shop_id];
    chatShop.textContent = (shop && shop.name) || s.shop_name || "";
    chatAssignee.textContent = s.assignee ? t("assigned_to", { name: s.assignee.name }) : t("unassigned");
    chatTags.textContent = "";
    ((s.customer && s.customer.tags) || []).forEach(function (tag) { chatTags.appendChild(el("span", "badge", tag)); });
    var open = s.status === "open";
    chatResolved.hidden = open;
    takeBtn.hidden = !(open && !s.assignee);
    // Agents resolve their own or unassigned conversations; supervisors any (the server's rule).
    resolveBtn.hidden = !open || (!ME.is_supervisor && !!s.assignee && s.assignee.id !== ME.id);
    headerReopen.hidden = open;
    renderAssignSelect();
  }

  function canTransfer(s) {
    if (!s || s.status !== "open") { return false; }
    return !!ME.is_supervisor || isMine(s);
  }

  function renderAssignSelect() {
    var s = conv && conv.summary;
    if (!s) { return; }
    if (document.activeElement === assignSelect) { return; } // do not close it under the agent's pointer
    assignSelect.textContent = "";
    var placeholder = el("option", null, t("transfer_placeholder"));
    placeholder.value = "";
    assignSelect.appendChild(placeholder);
    var entry = agentsCache[s.shop_id];
    var agents = (entry && entry.agents) || [];
    agents.forEach(function (agent) {
      if (s.assignee && agent.id === s.assignee.id) { return; }
      var name = agent.id === ME.id ? t("me_suffix", { name: agent.name }) : agent.name;
      var option = el("option", "presence-" + agent.presence, t("agent_option", {
        name: name,
        presence: t("presence." + agent.presence),
        open: agent.open_count,
        capacity: agent.capacity,
      }));
      option.value = String(agent.id);
      assignSelect.appendChild(option);
    });
    if (s.assignee) {
      var queue = el("option", null, t("return_to_queue"));
      queue.value = "queue";
      assignSelect.appendChild(queue);
    }
    assignSelect.value = "";
    assignSelect.disabled = !canTransfer(s);
    assignSelect.hidden = !(ME.is_supervisor || isMine(s)) || s.status !== "open";
  }

  function loadAgents(shopId, force) {
    var entry = agentsCache[shopId];
    if (entry && !force && Date.now() - entry.at < 30000) { return Promise.resolve(entry.agents); }
    if (entry && entry.promise) { return entry.promise; }
    var promise = api("/api/agents?shop=" + encodeURIComponent(shopId)).then(function (data) {
      agentsCache[shopId] = { agents: data.agents || [], at: Date.now() };
      if (conv && conv.summary && conv.summary.shop_id === shopId) { renderAssignSelect(); }
      return agentsCache[shopId].agents;
    }, function () {
      if (agentsCache[shopId]) { agentsCache[shopId].promise = null; }
      return [];
    });
    agentsCache[shopId] = Object.assign({ agents: [], at: 0 }, entry || {}, { promise: promise });
    return promise;
  }

  function showChatError(text) {
    chatError.textContent = text || "";
    chatError.hidden = !text;
  }

  function showComposerError(text) {
    composerErrorEl.textContent = text || "";
    composerErrorEl.hidden = !text;
    if (conv) { if (text) { composerErrors.set(conv.id, text); } else { composerErrors.delete(conv.id); } }
  }

  function currentMode() { return (conv && modes.get(conv.id)) || "reply"; }

  // What the platform still allows: the server's count, less what we sent since it was counted.
  function replyBudget() {
    var s = conv && conv.summary;
    if (!s) { return { left: 0, open: false, endsAt: 0 }; }
    var used = 0;
    conv.order.forEach(function (key) {
      var m = conv.msgs.get(key);
      if (!m || m.direction !== "outbound") { return; }
      if (m._key) { if (m._inFlight) { used++; } return; }
      if (m.sender_kind !== "customer" && m.seq && typeof s.last_seq === "number" && m.seq > s.last_seq) { used++; }
    });
    var left = typeof s.replies_left === "number" ? s.replies_left - used : REPLY_LIMIT - used;
    var endsAt = timeOf(s.reply_window_ends_at);
    return { left: Math.max(0, left), open: endsAt > Date.now(), endsAt: endsAt };
  }

  function repliesAllowed() {
    var s = conv && conv.summary;
    if (!s || s.status !== "open") { return false; }
    if (!ME.is_supervisor && s.assignee && s.assignee.id !== ME.id) { return false; }
    var budget = replyBudget();
    return budget.left > 0 && budget.open;
  }

  function renderComposerState() {
    if (!conv) { return; }
    var s = conv.summary;
    var resolved = !!(s && s.status === "resolved");
    composer.hidden = !s || resolved;
    resolvedNotice.hidden = !resolved;
    if (!s) { return; }
    var mode = currentMode();
    modeBtns.forEach(function (b) { b.setAttribute("aria-pressed", b.dataset.mode === mode ? "true" : "false"); });
    composer.classList.toggle("is-note", mode === "note");
    var budget = replyBudget();
    var blocked = budget.left <= 0 || !budget.open;
    // An agent cannot answer a buyer someone else is serving (notes are fine).
    var othersBuyer = !ME.is_supervisor && !!s.assignee && s.assignee.id !== ME.id;
    if (budget.open) {
      var msLeft = budget.endsAt - Date.now();
      var hours = Math.floor(msLeft / 3600000);
      var time = hours >= 1 ? t("hours", { n: hours }) : t("minutes", { n: Math.max(1, Math.ceil(msLeft / 60000)) });
      budgetEl.textContent = t("budget", { n: budget.left, time: time });
    } else {
      budgetEl.textContent = "";
    }
    budgetEl.dataset.repliesLeft = budget.open ? budget.left : 0;
    budgetEl.classList.toggle("is-low", budget.left <= 1 || blocked);
    composer.classList.toggle("is-blocked", blocked || othersBuyer);
    var warning = "";
    if (othersBuyer) {
      warning = t("serving", { name: s.assignee.name });
    } else if (blocked) {
      warning = budget.open ? t("limit_warning") : t("window_warning");
    }
    warningEl.textContent = warning;
    warningEl.hidden = !warning;
    var noReplies = blocked || othersBuyer;
    var replyOff = mode === "reply" && noReplies;
    textarea.disabled = replyOff;
    sendBtn.disabled = replyOff;
    imageBtn.disabled = noReplies || mode === "note";
    qa("[data-send-order]", sidebar).forEach(function (b) { b.disabled = noReplies || resolved; });
    textarea.placeholder = mode === "note" ? t("placeholder_note") : t("placeholder_reply");
  }

  function openConversation(id, options) {
    options = options || {};
    if (conv && conv.id === id && !options.force) { focusComposer(); return; }
    saveDraft();
    closeQuickReplies();
    var token = ++convToken;
    conv = {
      id: id, token: token, summary: null, shopId: null,
      msgs: new Map(), order: [], els: new Map(),
      lastSeq: 0, hasMoreOlder: false, loadingOlder: false, loaded: false, stickBottom: true,
    };
    if (options.push) {
      window.history.pushState({ conversation: id }, "", "/conversations/" + id + queryString());
    }
    inbox.els.forEach(function (li, rowId) {
      var a = li.querySelector("a");
      var selected = rowId === id;
      a.classList.toggle("is-selected", selected);
      if (selected) { a.setAttribute("aria-current", "true"); } else { a.removeAttribute("aria-current"); }
    });
    chatEmpty.hidden = true;
    chatPane.hidden = false;
    showChatError("");
    composerErrorEl.hidden = true;
    messagesList.textContent = "";
    chatName.textContent = "";
    chatShop.textContent = "";
    chatAssignee.textContent = "";
    chatTags.textContent = "";
    composer.hidden = true;
    resolvedNotice.hidden = true;
    [takeBtn, resolveBtn, headerReopen].forEach(function (b) { b.hidden = true; });
    assignSelect.hidden = true;
    topMarker();
    textarea.value = drafts.get(id) || "";
    var known_ = known.get(id);
    if (known_) { setConversationSummary(known_); }
    if (options.initialSidebar) { decorateSidebar(); } else { loadSidebar(id); }

    var fetchIt = function () { fetchConversation(token); };
    if (socket && socket.connected) {
      emitOpen(fetchIt);
    } else {
      fetchIt(); // the connect handler opens the room and re-syncs what came in between
    }
  }

  function emitOpen(then) {
    if (!conv) { return; }
    var c = conv;
    var done = false;
    var finish = function () { if (!done) { done = true; if (then) { then(); } } };
    emitAck("conversation.open", { conversation_id: c.id }, function (ack) {
      if (conv !== c) { return; }
      if (ack.ok && ack.conversation) {
        applySummary(ack.conversation, "read");
      } else if (!ack.ok && ack.error && ack.error.code === "not_found") {
        showNotFound();
        return;
      }
      finish();
    }, finish);
  }

  function showNotFound() {
    showChatError(t("not_found"));
    composer.hidden = true;
    resolvedNotice.hidden = true;
    messagesList.textContent = "";
  }

  function fetchConversation(token) {
    var c = conv;
    if (!c || c.token !== token) { return Promise.resolve(); }
    return api("/api/conversations/" + c.id).then(function (data) {
      if (conv !== c) { return; }
      var firstLoad = !c.loaded;
      c.loaded = true;
      if (firstLoad) { c.hasMoreOlder = !!data.has_more; }
      if (data.conversation) { applySummary(data.conversation, "read"); }
      (data.messages || []).forEach(function (m) { mergeMessage(m); });
      // Local messages of this conversation that the server has not confirmed yet.
      placeholders.forEach(function (p) {
        if (p.conversation_id === c.id && !c.msgs.has(p._key)) { putMessage(p); }
      });
      topMarker();
      if (firstLoad) {
        scrollToBottom();
        if (composerErrors.has(c.id)) { showComposerError(composerErrors.get(c.id)); }
        renderComposerState();
        focusComposer();
        if (c.summary) {
          loadAgents(c.summary.shop_id);
          loadQuickReplies(c.summary.shop_id);
        }
        markReadIfNeeded();
        if (c.resyncAfterLoad) { c.resyncAfterLoad = false; resyncSoon(true); }
      }
      watchPending();
    }, function (error) {
      if (conv !== c) { return; }
      if (error.code === "not_found" || error.code === "http_404") { showNotFound(); return; }
      showChatError(t("load_failed", { error: error.message }));
    });
  }

  function loadOlder() {
    var c = conv;
    if (!c || !c.loaded || !c.hasMoreOlder || c.loadingOlder) { return; }
    var oldest = null;
    c.order.forEach(function (key) { var m = c.msgs.get(key); if (m && m.seq && (oldest === null || m.seq < oldest)) { oldest = m.seq; } });
    if (oldest === null) { c.hasMoreOlder = false; topMarker(); return; }
    c.loadingOlder = true;
    topMarker();
    api("/api/conversations/" + c.id + "/messages?before_seq=" + oldest).then(function (data) {
      if (conv !== c) { return; }
      var height = messagesList.scrollHeight, top = messagesList.scrollTop;
      (data.messages || []).forEach(function (m) { if (m.conversation_id === c.id) { putMessage(m); } });
      c.hasMoreOlder = !!data.has_more;
      c.loadingOlder = false;
      topMarker();
      messagesList.scrollTop = top + (messagesList.scrollHeight - height);
    }, function (error) {
      if (conv !== c) { return; }
      c.loadingOlder = false;
      topMarker();
      showChatError(t("load_failed", { error: error.message }));
    });
  }

  // After a blip: what came after the last seq we have, and the current state of everything else.
  function resyncConversation() {
    var c = conv;
    if (!c || !c.loaded) { return; }
    api("/api/conversations/" + c.id + "/messages?after_seq=" + c.lastSeq).then(function (data) {
      if (conv !== c) { return; }
      (data.messages || []).forEach(function (m) { mergeMessage(m); });
    }, function () {});
    fetchConversation(c.token);
  }
  // The summary knows a newer message than we have: usually its event is right behind; if it still
  // has not come after a moment, fetch what is missing.
  var resyncTimer = null;
  function resyncSoon(force) {
    if (resyncTimer) { return; }
    resyncTimer = setTimeout(function () {
      resyncTimer = null;
      var c = conv;
      if (!c || !c.loaded) { return; }
      if (!force && c.summary && typeof c.summary.last_seq === "number" && c.summary.last_seq <= c.lastSeq) { return; }
      api("/api/conversations/" + c.id + "/messages?after_seq=" + c.lastSeq).then(function (data) {
        if (conv !== c) { return; }
        (data.messages || []).forEach(function (m) { mergeMessage(m); });
      }, function () {});
    }, force ? 300 : 1500);
  }

  // A message stuck in "pending" (an update lost on the way) is looked up again.
  var pendingTimer = null;
  function watchPending() {
    if (pendingTimer || !conv) { return; }
    var stuck = conv.order.some(function (key) {
      var m = conv.msgs.get(key);
      return m && !m._key && m.delivery_state === "pending";
    });
    if (!stuck) { return; }
    var c = conv;
    pendingTimer = setTimeout(function () {
      pendingTimer = null;
      if (conv !== c) { return; }
      var still = c.order.some(function (key) {
        var m = c.msgs.get(key);
        return m && !m._key && m.delivery_state === "pending" && Date.now() - timeOf(m.created_at) > 12000;
      });
      if (still && (!socket || socket.connected)) {
        fetchConversation(c.token);
      } else {
        watchPending();
      }
    }, 15000);
  }

  var readTimer = null;
  function markReadIfNeeded() {
    var c = conv;
    if (!c || !c.summary || !isMine(c.summary) || !c.summary.unread_count) { return; }
    if (document.visibilityState === "hidden" || !socket || !socket.connected) { return; }
    if (readTimer) { return; }
    readTimer = setTimeout(function () {
      readTimer = null;
      if (conv !== c) { return; }
      emitAck("conversation.read", { conversation_id: c.id }, function (ack) {
        if (ack.ok && ack.conversation) { applySummary(ack.conversation, "read"); }
      });
    }, 600);
  }

  function closeConversation() {
    if (!conv) { return; }
    saveDraft();
    var id = conv.id;
    conv = null;
    convToken++;
    if (socket && socket.connected) { emitAck("conversation.close", { conversation_id: id }); }
    chatPane.hidden = true;
    chatEmpty.hidden = false;
    inbox.els.forEach(function (li) {
      var a = li.querySelector("a");
      a.classList.remove("is-selected");
      a.removeAttribute("aria-current");
    });
    if (orderSidebar) { orderSidebar.clear(t("sidebar_hint")); }
  }

  // --- composer ----------------------------------------------------------------------------------

  function focusComposer() {
    if (!conv) { return; }
    if (!composer.hidden && !textarea.disabled) {
      textarea.focus();
    } else if (!resolvedNotice.hidden) {
      resolvedNotice.querySelector("button").focus();
    }
  }

  function saveDraft() {
    if (!conv) { return; }
    if (textarea.value) { drafts.set(conv.id, textarea.value); } else { drafts.delete(conv.id); }
  }

  function giveBackText(convId, text) {
    if (!text) { return; }
    if (conv && conv.id === convId) {
      textarea.value = textarea.value ? text + "\n" + textarea.value : text;
      saveDraft();
    } else {
      var draft = drafts.get(convId);
      drafts.set(convId, draft ? text + "\n" + draft : text);
    }
  }

  function refusal(convId, ack, text) {
    var message = errorText(ack);
    giveBackText(convId, text);
    if (conv && conv.id === convId) {
      showComposerError(message);
      var code = ack && ack.error && ack.error.code;
      if (code === "reply_limit" || code === "reply_window" || code === "resolved" || code === "conflict") {
        fetchConversation(conv.token);
      }
    } else {
      composerErrors.set(convId, message);
    }
  }

  // Sends a local message (text, order card, note) and settles it from the acknowledgement. One
  // conversation's messages go one at a time, so the buyer gets them in the order they were typed.
  var sendQueues = new Map(); // conversation id -> {busy, items}
  function deliver(p) {
    p._inFlight = true;
    if (p.direction === "outbound") { p.delivery_state = "pending"; } else { p.delivery_state = null; }
    if (conv && conv.id === p.conversation_id && conv.msgs.has(p._key)) { putMessage(p); }
    renderComposerState();
    var queue = sendQueues.get(p.conversation_id);
    if (!queue) { queue = { busy: false, items: [] }; sendQueues.set(p.conversation_id, queue); }
    queue.items.push(p);
    pumpSends(p.conversation_id);
  }

  function pumpSends(conversationId) {
    var queue = sendQueues.get(conversationId);
    if (!queue || queue.busy || !queue.items.length) { return; }
    var p = queue.items.shift();
    queue.busy = true;
    var moved = false;
    var next = function () {
      if (moved) { return; }
      moved = true;
      queue.busy = false;
      pumpSends(conversationId);
    };
    emitAck(p._event, p._payload, function (ack) {
      p._inFlight = false;
      if (ack.ok && ack.message) {
        mergeMessage(ack.message, p._key);
      } else if (placeholders.has(p._key)) { // (not settled already by a retry's answer)
        placeholders.delete(p._key);
        if (conv && conv.id === p.conversation_id) { removeMessage(p._key); }
        refusal(p.conversation_id, ack, p._giveBack);
      }
      renderComposerState();
      next();
    }, function () {
      p._inFlight = false;
      p.delivery_state = "unreached";
      if (conv && conv.id === p.conversation_id && conv.msgs.has(p._key)) { putMessage(p); }
      renderComposerState();
      next();
    });
  }

  function localMessage(fields) {
    var now = new Date().toISOString();
    return Object.assign({
      _local: ++localSeq,
      conversation_id: conv.id,
      sender_kind: "agent",
      sender: { id: ME.id, name: ME.name },
      body: null,
      text: null,
      image_url: null,
      created_at: now,
      sent_at: null,
    }, fields);
  }

  function sendReply(text) {
    var rid = newRequestId();
    var p = localMessage({
      _key: "r" + rid, _event: "message.send", _giveBack: text,
      _payload: { conversation_id: conv.id, request_id: rid, msg_type: "text", text: text },
      direction: "outbound", msg_type: "text", text: text, request_id: rid, delivery_state: "pending",
    });
    addLocal(p);
    deliver(p);
  }

  function sendNote(text) {
    var rid = newRequestId();  // a resend after a lost acknowledgement adds the note once
    var p = localMessage({
      _note: true, _key: "r" + rid, _event: "note.add", _giveBack: text,
      _payload: { conversation_id: conv.id, request_id: rid, text: text },
      direction: "internal", msg_type: "note", text: text, request_id: rid, delivery_state: null,
    });
    addLocal(p);
    deliver(p);
  }

  function submitComposer() {
    if (!conv || !conv.summary) { return; }
    var text = textarea.value;
    if (!text.trim()) { return; }
    if (text.length > MAX_TEXT) { showComposerError(t("too_long")); return; }
    var mode = currentMode();
    if (mode === "reply" && !repliesAllowed()) { renderComposerState(); return; }
    showComposerError("");
    textarea.value = "";
    drafts.delete(conv.id);
    closeQuickReplies();
    if (mode === "note") { sendNote(text); } else { sendReply(text); }
    textarea.focus();
  }

  function uploadImage(file) {
    if (!conv || !conv.summary) { return; }
    if (IMAGE_TYPES.indexOf(file.type) === -1 || file.size > MAX_IMAGE_BYTES) {
      showComposerError(t("image_too_big"));
      return;
    }
    if (!repliesAllowed()) { renderComposerState(); return; }
    showComposerError("");
    var rid = newRequestId();
    var convId = conv.id;
    var p = localMessage({
      _key: "r" + rid, _uploading: true, _inFlight: true,
      direction: "outbound", msg_type: "image", request_id: rid, delivery_state: "pending",
    });
    addLocal(p);
    renderComposerState();
    var form = new FormData();
    form.append("file", file);
    form.append("request_id", rid);
    api("/api/conversations/" + convId + "/images", { method: "POST", body: form }).then(function (data) {
      p._inFlight = false;
      if (data.message) { mergeMessage(data.message, p._key); }
      renderComposerState();
    }, function (error) {
      p._inFlight = false;
      placeholders.delete(p._key);
      if (conv && conv.id === convId) {
        removeMessage(p._key);
        showComposerError(t("upload_failed", { reason: error.message }));
      } else {
        composerErrors.set(convId, t("upload_failed", { reason: error.message }));
      }
      renderComposerState();
    });
  }

  function retryFailed(messageId, button) {
    if (!conv) { return; }
    button.disabled = true;
    var c = conv;
    emitAck("message.retry", { message_id: messageId }, function (ack) {
      if (ack.ok && ack.message) {
        mergeMessage(ack.message);
      } else {
        button.disabled = false;
        if (conv === c) { showComposerError(errorText(ack)); }
        if (ack.error && ack.error.code === "conflict") { fetchConversation(c.token); }
      }
    }, function () {
      button.disabled = false;
      if (conv === c) { showComposerError(t("timeout")); }
    });
  }

  // --- quick replies -----------------------------------------------------------------------------

  var qr = { open: false, items: [], index: 0, start: 0, end: 0 };

  function loadQuickReplies(shopId) {
    var entry = quickReplies[shopId];
    if (entry && (entry.promise || Date.now() - entry.at < 60000)) { return entry.promise || Promise.resolve(entry.list); }
    var promise = api("/api/quick-replies?shop=" + encodeURIComponent(shopId)).then(function (data) {
      quickReplies[shopId] = { list: data.quick_replies || [], at: Date.now(), promise: null };
      if (qr.open) { updateQuickReplies(); }
      return quickReplies[shopId].list;
    }, function () {
      quickReplies[shopId] = { list: (entry && entry.list) || [], at: 0, promise: null };
      return quickReplies[shopId].list;
    });
    quickReplies[shopId] = { list: (entry && entry.list) || [], at: (entry && entry.at) || 0, promise: promise };
    return promise;
  }

  function closeQuickReplies() {
    qr.open = false;
    qr.items = [];
    qrList.hidden = true;
    qrList.textContent = "";
    textarea.setAttribute("aria-expanded", "false");
    textarea.removeAttribute("aria-activedescendant");
  }

  function updateQuickReplies() {
    if (!conv || !conv.summary || textarea.selectionStart !== textarea.selectionEnd) { closeQuickReplies(); return; }
    var caret = textarea.selectionStart;
    var before = textarea.value.slice(0, caret);
    var match = /(^|\s)\/([^\s/]*)$/.exec(before);
    if (!match) { closeQuickReplies(); return; }
    var query = match[2].toLowerCase();
    qr.start = caret - match[2].length - 1;
    qr.end = caret;
    var shopId = conv.summary.shop_id;
    var entry = quickReplies[shopId];
    if (!entry || (!entry.at && !entry.promise)) { loadQuickReplies(shopId); }
    var list = (entry && entry.list) || [];
    var ranked = [];
    list.forEach(function (item) {
      var shortcut = (item.shortcut || "").toLowerCase(), title = (item.title || "").toLowerCase();
      var rank = -1;
      if (!query || shortcut.indexOf(query) === 0) { rank = 0; } else if (title.indexOf(query) === 0) { rank = 1; } else if (shortcut.indexOf(query) > 0) { rank = 2; } else if (title.indexOf(query) > 0) { rank = 3; }
      if (rank >= 0) { ranked.push({ item: item, rank: rank }); }
    });
    ranked.sort(function (a, b) {
      return a.rank - b.rank || (b.item.personal ? 1 : 0) - (a.item.personal ? 1 : 0) ||
        (a.item.shortcut || "").localeCompare(b.item.shortcut || "");
    });
    qr.items = ranked.slice(0, 8).map(function (r) { return r.item; });
    qr.index = Math.min(qr.index, Math.max(0, qr.items.length - 1));
    if (!qr.open) { qr.index = 0; }
    qr.open = true;
    renderQuickReplies();
  }

  function renderQuickReplies() {
    qrList.textContent = "";
    if (!qr.items.length) {
      qrList.appendChild(el("li", "qr-empty muted", t("no_quick_replies")));
    }
    qr.items.forEach(function (item, i) {
      var li = el("li", "qr-item");
      li.id = "qr-option-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === qr.index ? "true" : "false");
      li.dataset.index = i;
      var head = el("span", "qr-head");
      head.appendChild(el("span", "qr-shortcut mono", "/" + (item.shortcut || "")));
      head.appendChild(el("span", "qr-title", item.title || ""));
      if (item.personal) { head.appendChild(el("span", "badge qr-personal", t("personal"))); }
      li.appendChild(head);
      li.appendChild(el("span", "qr-content muted", item.content || ""));
      qrList.appendChild(li);
    });
    qrList.hidden = false;
    textarea.setAttribute("aria-expanded", "true");
    if (qr.items.length) {
      textarea.setAttribute("aria-activedescendant", "qr-option-" + qr.index);
      var active = q("#qr-option-" + qr.index, qrList);
      if (active && active.scrollIntoView) { active.scrollIntoView({ block: "nearest" }); }
    } else {
      textarea.removeAttribute("aria-activedescendant");
    }
  }

  function insertQuickReply(index) {
    var item = qr.items[index];
    if (!item) { return; }
    var value = textarea.value;
    var content = item.content || "";
    textarea.value = value.slice(0, qr.start) + content + value.slice(qr.end);
    var caret = qr.start + content.length;
    closeQuickReplies();
    textarea.focus();
    textarea.setSelectionRange(caret, caret);
    saveDraft();
  }

  // --- sidebar -----------------------------------------------------------------------------------

  // The sidebar itself lives in sidebar.js (orders, after-sale actions, live updates).
  var orderSidebar = (window.channeldesk && window.channeldesk.sidebar) || null;
  if (orderSidebar) { orderSidebar.onLoaded = function () { renderComposerState(); }; }
  function loadSidebar(id) { if (orderSidebar) { orderSidebar.load(id); } }
  function decorateSidebar() { renderComposerState(); }

  // --- notifications -----------------------------------------------------------------------------

  var MAX_TOASTS = 3;
  function notify(text, conversationId) {
    if (!flashes) { return; }
    var shown = qa(".flash-assigned", flashes);
    for (var i = 0; i <= shown.length - MAX_TOASTS; i++) { shown[i].remove(); } // peaks: keep the newest few
    var flash = el("div", "flash flash-info flash-assigned");
    var button = el("button", "flash-link", text);
    button.type = "button";
    button.addEventListener("click", function () {
      flash.remove();
      if (conversationId) { openConversation(conversationId, { push: true }); }
    });
    flash.appendChild(button);
    flashes.appendChild(flash);
    setTimeout(function () { flash.remove(); }, 6000);
    var li = inbox.els.get(conversationId);
    if (li) {
      var a = li.querySelector("a");
      a.classList.add("is-new");
      setTimeout(function () { a.classList.remove("is-new"); }, 4000);
    }
  }

  // --- events from the page ----------------------------------------------------------------------

  inboxList.addEventListener("click", function (event) {
    var a = event.target.closest("a[data-conversation-id]");
    if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) { return; }
    event.preventDefault();
    openConversation(parseInt(a.dataset.conversationId, 10), { push: true });
  });

  tabsNav.addEventListener("click", function (event) {
    var a = event.target.closest("a[data-view]");
    if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) { return; }
    event.preventDefault();
    setView({ view: a.dataset.view });
  });

  if (chipsBox) {
    chipsBox.addEventListener("click", function (event) {
      var a = event.target.closest("a[data-shop]");
      if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) { return; }
      event.preventDefault();
      setView({ shop: a.dataset.shop ? parseInt(a.dataset.shop, 10) : null });
    });
  }

  var searchTimer = null;
  searchForm.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(searchTimer);
    setView({ q: searchInput.value.trim().slice(0, 64) });
  });
  searchInput.addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () { setView({ q: searchInput.value.trim().slice(0, 64) }); }, 300);
  });

  loadMoreBtn.addEventListener("click", function () {
    loadMoreBtn.disabled = true;
    loadInbox(true);
  });

  messagesList.addEventListener("scroll", function () {
    if (!conv) { return; }
    conv.stickBottom = nearBottom();
    if (messagesList.scrollTop < 80) { loadOlder(); }
  });

  messagesList.addEventListener("click", function (event) {
    var retry = event.target.closest("button[data-retry-id]");
    if (retry) { retryFailed(parseInt(retry.dataset.retryId, 10), retry); return; }
    var resend = event.target.closest("button[data-resend-key]");
    if (resend) {
      var p = placeholders.get(resend.dataset.resendKey);
      if (p) { deliver(p); }
    }
  });

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    submitComposer();
  });

  textarea.addEventListener("keydown", function (event) {
    var composing = event.isComposing || event.keyCode === 229;
    if (qr.open) {
      if (event.key === "Escape") { event.preventDefault(); closeQuickReplies(); return; }
      if (qr.items.length && !composing) {
        if (event.key === "ArrowDown") { event.preventDefault(); qr.index = (qr.index + 1) % qr.items.length; renderQuickReplies(); return; }
        if (event.key === "ArrowUp") { event.preventDefault(); qr.index = (qr.index - 1 + qr.items.length) % qr.items.length; renderQuickReplies(); return; }
        if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") { event.preventDefault(); insertQuickReply(qr.index); return; }
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !composing) {
      event.preventDefault();
      submitComposer();
    }
  });
  textarea.addEventListener("input", function () {
    if (composerErrorEl.textContent && textarea.value === "") { showComposerError(""); }
    saveDraft();
    updateQuickReplies();
  });
  textarea.addEventListener("click", updateQuickReplies);
  textarea.addEventListener("blur", function () { setTimeout(function () { if (document.activeElement !== textarea) { closeQuickReplies(); } }, 150); });
  textarea.addEventListener("paste", function (event) {
    var items = (event.clipboardData && event.clipboardData.files) || [];
    if (!items.length || currentMode() !== "reply") { return; }
    var images = Array.prototype.filter.call(items, function (f) { return f.type.indexOf("image/") === 0; });
    if (!images.length) { return; }
    event.preventDefault();
    images.forEach(uploadImage);
  });

  qrList.addEventListener("mousedown", function (event) {
    var li = event.target.closest("li[data-index]");
    event.preventDefault(); // keep the focus in the textarea
    if (li) { insertQuickReply(parseInt(li.dataset.index, 10)); }
  });

  modeBtns.forEach(function (button) {
    button.addEventListener("click", function () {
      if (!conv) { return; }
      modes.set(conv.id, button.dataset.mode);
      closeQuickReplies();
      renderComposerState();
      focusComposer();
    });
  });

  imageBtn.addEventListener("click", function () { imageInput.click(); });
  imageInput.addEventListener("change", function () {
    Array.prototype.forEach.call(imageInput.files || [], uploadImage);
    imageInput.value = "";
  });

  function conversationAction(event, payload, button) {
    if (!conv) { return; }
    var c = conv;
    if (button) { button.disabled = true; }
    showChatError("");
    emitAck(event, Object.assign({ conversation_id: c.id }, payload || {}), function (ack) {
      if (button) { button.disabled = false; }
      if (ack.ok && ack.conversation) {
        applySummary(ack.conversation, "assigned");
        if (conv === c) { showComposerError(""); }
      } else if (conv === c) {
        showChatError(errorText(ack));
      }
      if (conv === c) { focusComposer(); }
    }, function () {
      if (button) { button.disabled = false; }
      if (conv === c) { showChatError(t("timeout")); }
    });
  }

  takeBtn.addEventListener("click", function () { conversationAction("conversation.assign", { user_id: ME.id }, takeBtn); });
  resolveBtn.addEventListener("click", function () { conversationAction("conversation.resolve", null, resolveBtn); });
  reopenBtns.forEach(function (button) {
    button.addEventListener("click", function () { conversationAction("conversation.reopen", null, button); });
  });
  assignSelect.addEventListener("focus", function () {
    if (conv && conv.summary) { loadAgents(conv.summary.shop_id, true); }
  });
  assignSelect.addEventListener("change", function () {
    var value = assignSelect.value;
    if (!value) { return; }
    var userId = value === "queue" ? null : parseInt(value, 10);
    assignSelect.blur();
    conversationAction("conversation.assign", { user_id: userId }, assignSelect);
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { markReadIfNeeded(); }
  });

  window.addEventListener("popstate", function () {
    var loc = readLocation();
    setView({ view: loc.view, shop: loc.shop, q: loc.q }, { fromHistory: true });
    if (loc.conversationId) {
      openConversation(loc.conversationId, {});
    } else {
      closeConversation();
    }
  });

  // The 48-hour window closes by itself: keep the budget line current.
  function slaClock(seconds) {
    var m = Math.floor(seconds / 60), sec = seconds % 60;
    return m + ":" + String(sec).padStart(2, "0");
  }
  function slaRender(span, now) {
    var deadline = parseInt(span.getAttribute("data-sla-deadline"), 10);
    var warn = parseInt(span.getAttribute("data-sla-warn"), 10);
    var left = Math.ceil((deadline - now) / 1000);
    var text = left >= 0 ? t("sla_left", { time: slaClock(left) }) : t("sla_over", { time: slaClock(-left) });
    if (span.textContent !== text) { span.textContent = text; }
    span.classList.toggle("is-warning", now >= warn && left >= 0);
    span.classList.toggle("is-breached", left < 0);
  }
  function playWarning() {
    if (!SLA_SOUND) { return; }
    if (!SLA.sound) { SLA.sound = new Audio(SLA_SOUND); }
    document.body.setAttribute("data-sla-sound", "playing");
    try {
      SLA.sound.currentTime = 0;
      var played = SLA.sound.play();
      if (played && played.then) {
        played.then(function () { document.body.setAttribute("data-sla-sound", "played"); }, function () {
          // Browsers refuse sound until the agent has interacted with the page; the highlight stays.
          document.body.setAttribute("data-sla-sound", "blocked");
        });
      }
    } catch (e) { document.body.setAttribute("data-sla-sound", "blocked"); }
  }
  function slaTick() {
    var now = Date.now();
    qa(".sla-countdown", inboxList).forEach(function (span) { slaRender(span, now); });
    inbox.rows.slice().forEach(function (s) {
      var warned = slaWarned(s, now);
      if (warned && !SLA.alerted.has(warned.key)) {
        SLA.alerted.add(warned.key);
        placeRow(s, true);  // re-sorted: warned rows go first
        if (isMine(s) || !s.assignee) { playWarning(); }
      }
    });
  }
  function renderSlaMine(me) {
    if (!slaMine) { return; }
    if (!me || me.rate == null) {
      slaMine.textContent = t("sla_mine_none");
    } else {
      slaMine.textContent = t("sla_mine", { rate: (me.rate * 100).toFixed(1) + "%", met: me.met, turns: me.turns });
      slaMine.classList.toggle("is-low", me.rate < 0.8);
    }
  }
  function loadSla() {
    if (SLA.loading) { SLA.again = true; return; }
    SLA.loading = true;
    fetch("/api/sla/me", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (me) {
        if (me) {
          var changed = JSON.stringify(SLA.policies) !== JSON.stringify(me.policies || {});
          SLA.policies = me.policies || {};
          renderSlaMine(me);
          if (changed) { inbox.rows.slice().forEach(function (s) { placeRow(s, true); }); }
        }
      })
      .catch(function () { /* the next event or minute tries again */ })
      .then(function () {
        SLA.loading = false;
        if (SLA.again) { SLA.again = false; setTimeout(loadSla, 300); }
      });
  }
  loadSla();
  setInterval(slaTick, 1000);
  setInterval(loadSla, 60000);

  setInterval(function () { if (conv && conv.summary) { renderComposerState(); } }, 30000);
  // Counts of views this tab gets no events for (a shared view while in "mine", and vice versa).
  setInterval(function () { if (document.visibilityState === "visible") { refreshCountsSoon(); } }, 30000);

  // --- realtime ----------------------------------------------------------------------------------

  var bannerTimer = null;
  function showBanner(text) {
    if (!banner) { return; }
    banner.textContent = text;
    banner.hidden = false;
  }
  function hideBanner() {
    clearTimeout(bannerTimer);
    if (banner) { banner.hidden = true; }
  }

  if (socket) {
    socket.on("connect", function () {
      connectCount++;
      hideBanner();
      var first = connectCount === 1;
      // Join the rooms first, then (re)load, so nothing falls between the load and the join.
      watchInbox(function () { loadInbox(false); });
      if (!first) { loadMineUnread(); }
      if (conv) {
        var c = conv;
        emitOpen(function () {
          if (conv !== c) { return; }
          if (!c.loaded) { c.resyncAfterLoad = true; return; } // the first fetch is still on its way
          if (first) { resyncSoon(true); } else { resyncConversation(); }
        });
      }
    });
    socket.on("disconnect", function (reason) {
      if (reason === "io client disconnect") { return; }
      showBanner(t("reconnecting"));
    });
    socket.on("connect_error", function (error) {
      if (error && error.message === "unauthorized") {
        showBanner(t("signed_out"));
      } else {
        showBanner(t("reconnecting"));
      }
    });
    // Redis came back after a blip: events published meanwhile are lost, though this socket stayed
    // connected. Re-read what a reconnect would.
    socket.on("resync", function () {
      loadInbox(false);
      loadMineUnread();
      if (conv && conv.loaded) { resyncConversation(); }
    });
    socket.on("conversation.updated", function (data) {
      if (!data || !data.conversation) { return; }
      applySummary(data.conversation, data.reason);
      if (data.message && conv && data.message.conversation_id === conv.id) {
        mergeMessage(data.message);
      }
      if (conv && conv.id === data.conversation.id && data.reason === "message") { markReadIfNeeded(); }
    });
    socket.on("message.created", function (data) {
      if (!data || !data.message) { return; }
      mergeMessage(data.message);
      if (conv && data.message.conversation_id === conv.id && data.message.direction === "inbound") { markReadIfNeeded(); }
    });
    socket.on("message.updated", function (data) {
      if (data && data.message) { mergeMessage(data.message); }
    });
    socket.on("conversation.assigned", function (data) {
      if (!data || !data.conversation) { return; }
      var s = data.conversation;
      applySummary(s, "assigned");
      // Not for the conversation on screen (taken, or answered from the queue, by this very agent).
      if (isMine(s) && !(conv && conv.id === s.id)) { notify(t("assigned_to_you", { name: customerName(s) }), s.id); }
    });
    socket.on("sla.turn", function () { loadSla(); });
    socket.on("presence.changed", function (data) {
      if (!data) { return; }
      var touched = false;
      Object.keys(agentsCache).forEach(function (shopId) {
        (agentsCache[shopId].agents || []).forEach(function (agent) {
          if (agent.id === data.user_id) { agent.presence = data.presence; touched = true; }
        });
      });
      if (touched && conv && conv.summary) { renderAssignSelect(); }
    });
  }

  // --- start -------------------------------------------------------------------------------------

  var start = readLocation();
  inbox.view = start.view;
  inbox.shop = start.shop;
  inbox.q = start.q;
  renderTabs();
  window.history.replaceState(window.history.state, "", window.location.pathname + queryString());
  loadInbox(false);
  loadMineUnread();
  var selectedId = parseInt(dataEl.getAttribute("data-selected-id") || "", 10) || start.conversationId;
  if (selectedId) {
    openConversation(selectedId, { initialSidebar: true });
  }
  if (socket && socket.connected) {
    // Connected before this script ran: the connect handler missed it.
    connectCount = 1;
    watchInbox(function () { loadInbox(false); });
    if (conv) { emitOpen(); }
  }
})();
