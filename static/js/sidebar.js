/* ChannelDesk order sidebar (contract: docs/api.md, "Order sidebar"): the buyer's orders and
   after-sales beside the open conversation, live; after-sale actions, the full address, the order
   card, finding a buyer. The console (console.js) tells it which conversation is open through
   window.channeldesk.sidebar.load(id) / clear(). The fragment is our own server-rendered template. */
(function () {
  "use strict";

  var root = document.querySelector("[data-sidebar]");
  if (!root) { return; }
  var channeldesk = window.channeldesk = window.channeldesk || {};
  var stringsEl = document.getElementById("sidebar-strings");
  var S = {};
  try { S = JSON.parse((stringsEl && stringsEl.getAttribute("data-strings")) || "{}"); } catch (e) { S = {}; }
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var TIMEOUT_MS = 15000;

  function t(key, vars) {
    var text = S[key] == null ? key : String(S[key]);
    return text.replace(/%\((\w+)\)s/g, function (whole, name) {
      return vars && vars[name] != null ? String(vars[name]) : whole;
    });
  }
  function q(selector, base) { return (base || document).querySelector(selector); }
  function qa(selector, base) { return Array.prototype.slice.call((base || document).querySelectorAll(selector)); }
  function newRequestId() {
    if (window.crypto && window.crypto.randomUUID) { return window.crypto.randomUUID().replace(/-/g, ""); }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // JSON over HTTP with the CSRF header; rejects with {code, message, network} on any failure.
  function api(method, path, body) {
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    var headers = { "Accept": "application/json" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    if (method !== "GET" && csrfMeta) { headers["X-CSRFToken"] = csrfMeta.getAttribute("content"); }
    return fetch(path, {
      method: method, credentials: "same-origin", headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller ? controller.signal : undefined,
    }).then(function (response) {
      if (timer) { clearTimeout(timer); }
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.ok) { return data; }
        var error = data && data.error ? data.error : { code: "http_" + response.status, message: response.statusText };
        throw error;
      });
    }, function () {
      if (timer) { clearTimeout(timer); }
      throw { code: "network", message: t("network_error"), network: true };
    });
  }

  // --- loading the fragment ------------------------------------------------------------------------

  var current = { id: null, page: 1, token: 0, stale: false, timer: null };

  function content() { return q("[data-sidebar-content]", root); }

  function busy() {
    // Do not pull the floor from under an agent picking a reason or an address.
    var open = qa("[data-reject-form]", root).some(function (f) { return !f.hidden; });
    var active = document.activeElement;
    return open || (active && root.contains(active) && (active.tagName === "SELECT" || active.tagName === "INPUT"));
  }

  function load(id, page, quiet) {
    if (id !== current.id) { current.page = 1; }
    current.id = id;
    current.page = page || current.page || 1;
    current.stale = false;
    var token = ++current.token;
    if (!quiet) {
      root.setAttribute("aria-busy", "true");
      root.textContent = "";
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = t("loading");
      root.appendChild(p);
    }
    var url = "/conversations/" + id + "/sidebar" + (current.page > 1 ? "?page=" + current.page : "");
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status + " " + response.statusText); }
        return response.text();
      })
      .then(function (html) {
        if (token !== current.token) { return; }
        root.innerHTML = html; // our own server-rendered template (escaped by Jinja)
        root.removeAttribute("aria-busy");
        rendered();
      }, function (error) {
        if (token !== current.token) { return; }
        root.removeAttribute("aria-busy");
        if (quiet && content()) { return; } // keep what is shown; the next change reloads
        root.textContent = "";
        var p = document.createElement("p");
        p.className = "muted";
        p.textContent = t("load_failed", { error: error.message || t("network_error") });
        root.appendChild(p);
      });
  }

  function rendered() {
    if (channeldesk.tickDeadlines) { channeldesk.tickDeadlines(root); }
    if (typeof sidebar.onLoaded === "function") { sidebar.onLoaded(); }
  }

  function clear(hint) {
    current.id = null;
    current.token++;
    root.textContent = "";
    var p = document.createElement("p");
    p.className = "muted";
    p.textContent = hint || t("hint");
    root.appendChild(p);
  }

  function reloadSoon() {
    if (current.id === null) { return; }
    if (busy()) { current.stale = true; return; }
    if (current.timer) { clearTimeout(current.timer); }
    current.timer = setTimeout(function () {
      current.timer = null;
      if (current.id !== null) { load(current.id, current.page, true); }
    }, 250);
  }

  // Live: a poller, a push or an action changed one of this buyer's orders or after-sales.
  function listen() {
    var socket = channeldesk.socket;
    if (!socket) { return; }
    socket.on("sidebar.changed", function () { reloadSoon(); });
    var connectedBefore = socket.connected;
    socket.on("connect", function () {
      // Back from a blip: events may have been missed while away.
      if (connectedBefore && current.id !== null) { reloadSoon(); }
      connectedBefore = true;
    });
  }

  // A reload skipped while the agent was busy happens once they are done.
  root.addEventListener("focusout", function () {
    setTimeout(function () { if (current.stale && !busy()) { reloadSoon(); } }, 0);
  });

  // --- after-sale actions --------------------------------------------------------------------------

  function showError(section, text) {
    var box = q("[data-action-error]", section);
    if (!box) { return; }
    box.textContent = text || "";
    box.hidden = !text;
  }

  function setBusy(section, on) {
    qa("button", section).forEach(function (b) { b.disabled = on; });
    section.classList.toggle("is-sending", on);
  }

  function act(button) {
    var section = button.closest("[data-after-sale]");
    if (!section || section.classList.contains("is-sending")) { return; }
    var kind = button.getAttribute("data-act");
    var payload = { kind: kind };
    if (kind === "approve_return") {
      var select = q("[data-return-address]", section);
      if (!select || !select.value) { showError(section, t("pick_address")); return; }
      payload.address_pk = parseInt(select.value, 10);
    }
    if (kind === "reject") {
      var reason = q("[data-reject-reason]", section);
      if (!reason || !reason.value) { showError(section, t("pick_reason")); return; }
      payload.reject_reason_type = parseInt(reason.value, 10);
      payload.reject_reason = (q("[data-reject-text]", section) || {}).value || "";
    }
    var confirmText = button.getAttribute("data-confirm");
    if (confirmText && !window.confirm(confirmText)) { return; }
    // One request id per intended action: a retry after a timeout or a lost answer reuses it, so the
    // server answers with the same action instead of queueing a second one.
    var key = "rid_" + kind;
    var rid = section.dataset[key] || (section.dataset[key] = newRequestId());
    payload.request_id = rid;
    showError(section, "");
    setBusy(section, true);
    var pk = section.getAttribute("data-after-sale");
    api("POST", "/api/after-sales/" + pk + "/actions", payload).then(function () {
      qa("[data-reject-form]", section).forEach(function (f) { f.hidden = true; });
      load(current.id, current.page, true);
    }, function (error) {
      setBusy(section, false);
      if (!error.network) { delete section.dataset[key]; } // refused: a corrected try is a new action
      showError(section, error.network ? t("retry_hint", { error: error.message }) : error.message);
    });
  }

  function openReject(button) {
    var section = button.closest("[data-after-sale]");
    var form = q("[data-reject-form]", section);
    if (!form) { return; }
    form.hidden = !form.hidden;
    if (form.hidden) { return; }
    var select = q("[data-reject-reason]", form);
    if (select.getAttribute("data-loaded") === "1") { select.focus(); return; }
    api("GET", "/api/after-sales/" + section.getAttribute("data-after-sale") + "/reject-reasons").then(function (data) {
      select.textContent = "";
      var first = document.createElement("option");
      first.value = "";
      first.textContent = t("choose_reason");
      select.appendChild(first);
      (data.reasons || []).forEach(function (r) {
        var option = document.createElement("option");
        option.value = String(r.reject_reason_type);
        option.textContent = r.text;
        select.appendChild(option);
      });
      select.setAttribute("data-loaded", "1");
      select.focus();
    }, function (error) {
      showError(section, error.message);
    });
  }

  // --- the full address, the order card ------------------------------------------------------------

  function revealAddress(button) {
    var box = button.closest("[data-address]");
    button.disabled = true;
    api("POST", "/api/orders/" + button.getAttribute("data-reveal-address") + "/address", {}).then(function (data) {
      var a = data.address || {};
      q("[data-address-text]", box).textContent = [a.user_name, a.tel_number,
        (a.province_name || "") + (a.city_name || "") + (a.county_name || "") + (a.detail_info || "")].join(" ");
      box.classList.add("is-revealed");
      button.remove();
      var left = q("[data-decodes-left]", box);
      if (left) { left.textContent = t("decodes_left", { n: data.decodes_left }); }
    }, function (error) {
      button.disabled = false;
      var left = q("[data-decodes-left]", box);
      if (left) { left.textContent = error.message; left.classList.add("is-error"); }
    });
  }

  function sendCard(button) {
    var card = button.closest("[data-order-pk]");
    var rid = button.dataset.requestId || (button.dataset.requestId = newRequestId());
    button.disabled = true;
    api("POST", "/api/orders/" + card.getAttribute("data-order-pk") + "/card",
      { conversation_id: current.id, request_id: rid }).then(function () {
      delete button.dataset.requestId;
      button.textContent = t("card_queued");
      setTimeout(function () {
        button.textContent = t("send_order");
        button.disabled = false;
        if (typeof sidebar.onLoaded === "function") { sidebar.onLoaded(); } // the reply budget decides
      }, 2500);
    }, function (error) {
      button.disabled = false;
      if (!error.network) { delete button.dataset.requestId; }
      var box = q(".order-actions", card);
      var note = q(".action-error", box) || document.createElement("p");
      note.className = "action-error";
      note.setAttribute("role", "alert");
      note.textContent = error.message;
      box.appendChild(note);
    });
  }

  root.addEventListener("click", function (event) {
    var target = event.target.closest("button");
    if (!target || !root.contains(target)) { return; }
    if (target.hasAttribute("data-act")) { act(target); }
    else if (target.hasAttribute("data-reject-open")) { openReject(target); }
    else if (target.hasAttribute("data-reveal-address")) { revealAddress(target); }
    else if (target.hasAttribute("data-send-order")) { sendCard(target); }
    else if (target.hasAttribute("data-sidebar-page")) {
      load(current.id, parseInt(target.getAttribute("data-sidebar-page"), 10) || 1);
    }
  });

  // --- finding a buyer -----------------------------------------------------------------------------

  var searchForm = document.querySelector("[data-buyer-search]");
  var searchInput = document.querySelector("[data-buyer-q]");
  var results = document.querySelector("[data-buyer-results]");
  var searchTimer = null;
  var searchToken = 0;

  function showResults(buyers, query) {
    results.textContent = "";
    results.hidden = false;
    if (!buyers.length) {
      var none = document.createElement("li");
      none.className = "muted";
      none.textContent = t("no_buyers", { q: query });
      results.appendChild(none);
      return;
    }
    buyers.forEach(function (b) {
      var li = document.createElement("li");
      var name = (b.nickname || b.openid) + (b.shop ? " · " + b.shop.name : "");
      var how = b.order_id ? t("matched_order", { id: b.order_id }) : t("matched_" + b.matched);
      if (b.conversation_id) {
        var a = document.createElement("a");
        a.href = "/conversations/" + b.conversation_id;
        a.textContent = name;
        li.appendChild(a);
      } else {
        var span = document.createElement("span");
        span.textContent = name;
        li.appendChild(span);
        how += " · " + t("no_conversation");
      }
      var small = document.createElement("small");
      small.className = "muted";
      small.textContent = " " + how;
      li.appendChild(small);
      results.appendChild(li);
    });
  }

  function search() {
    var query = searchInput.value.trim();
    var token = ++searchToken;
    if (!query) { results.hidden = true; results.textContent = ""; return; }
    api("GET", "/api/buyers?q=" + encodeURIComponent(query)).then(function (data) {
      if (token === searchToken) { showResults(data.buyers || [], query); }
    }, function (error) {
      if (token === searchToken) { results.hidden = false; results.textContent = error.message; }
    });
  }

  if (searchForm && searchInput && results) {
    searchForm.addEventListener("submit", function (event) { event.preventDefault(); search(); });
    searchInput.addEventListener("input", function () {
      if (searchTimer) { clearTimeout(searchTimer); }
      searchTimer = setTimeout(search, 300);
    });
  }

  var sidebar = channeldesk.sidebar = { load: function (id) { return load(id, 1); }, clear: clear, reload: reloadSoon, onLoaded: null };
  var initial = content();
  if (initial) {
    current.id = parseInt(initial.getAttribute("data-conversation-id"), 10) || null;
    current.page = parseInt(initial.getAttribute("data-page"), 10) || 1;
  }
  listen();
})();
