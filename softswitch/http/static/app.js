// The softswitch dashboard: a single page over the switch's JSON API (/api/...) and its
// event stream (/api/events). Plain JavaScript, no build step; charts by Chart.js with
// the chartjs-chart-matrix plugin (static/vendor/, MIT). Every value from the switch is
// put into the page as text (textContent), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "softswitch.token";
  const POLL_LIVE = 5000; // ms between GETs while the event stream is connected
  const POLL_OFFLINE = 2000; // ... and while it is not
  const HEATMAP_MAX_DAYS = 31; // the heatmap fetches one load report per day
  const TABS = ["wallboard", "reports", "missed", "voicemail"];

  const state = {
    token: localStorage.getItem(TOKEN_KEY) || "",
    signedIn: false,
    tab: "wallboard",
    skew: 0, // server clock − browser clock, seconds (from the Date header, when ≥ 2 s)
    tz: null, // the switch's time zone, once a report told it
    status: null,
    queues: [],
    operators: new Map(),
    calls: new Map(),
    ws: null,
    wsLive: false,
    wsRetry: 1000,
    pollTimer: null,
    refreshTimer: null,
    refreshing: null,
    reportsLoaded: false,
    missedLoaded: false,
    datesSet: false,
    playing: null, // {id, url} of the voicemail in the player
  };

  // -- small helpers -------------------------------------------------------------------
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  /** Replaces `e`'s children with `children` (null / false skipped, strings as text). */
  function fill(e, ...children) {
    e.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
    return e;
  }

  /** An element with properties and children (strings become text nodes). */
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  const nowLocal = () => Date.now() / 1000;

  /** Seconds as m:ss, or h:mm:ss from an hour on. */
  function duration(seconds) {
    if (seconds == null || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    const hh = Math.floor(s / 3600);
    const mm = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
  }

  const percent = (x) => (x == null ? "–" : `${(x * 100).toFixed(1)} %`);
  const seconds1 = (x) => (x == null ? "–" : `${x.toFixed(1)} s`);

  function timeText(unix, withDate = true) {
    if (unix == null) return "–";
    const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    if (withDate) Object.assign(opts, { year: "numeric", month: "2-digit", day: "2-digit" });
    if (state.tz) opts.timeZone = state.tz;
    try {
      return new Intl.DateTimeFormat("en-CA", opts).format(new Date(unix * 1000)).replace(",", "");
    } catch {
      return new Date(unix * 1000).toLocaleString();
    }
  }

  /** Today's date (YYYY-MM-DD) in the switch's time zone when known, else the browser's. */
  function today() {
    const opts = { year: "numeric", month: "2-digit", day: "2-digit" };
    if (state.tz) opts.timeZone = state.tz;
    try {
      return new Intl.DateTimeFormat("en-CA", opts).format(new Date());
    } catch {
      return new Date().toISOString().slice(0, 10);
    }
  }

  function addDays(iso, n) {
    const d = new Date(`${iso}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  function daysBetween(first, last) {
    const out = [];
    for (let d = first; d <= last && out.length < 400; d = addDays(d, 1)) out.push(d);
    return out;
  }

  function operatorName(agent) {
    const op = state.operators.get(agent);
    return op && op.name && op.name !== agent ? `${op.name} (${agent})` : agent;
  }

  let toastTimer = null;
  function toast(message) {
    const t = $("#toast");
    t.textContent = message;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), 6000);
  }

  // -- the API ---------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function noteSkew(res) {
    const date = res.headers.get("Date");
    if (!date) return;
    const server = Date.parse(date) / 1000;
    if (!isFinite(server)) return;
    const skew = server - nowLocal();
    state.skew = Math.abs(skew) >= 2 ? skew : 0; // the header has whole seconds only
  }

  async function api(path, { method = "GET", body, raw = false } = {}) {
    const headers = { Authorization: `Bearer ${state.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new ApiError(0, "The switch cannot be reached.");
    }
    noteSkew(res);
    if (res.status === 401) {
      signOut("The switch refused this token.");
      throw new ApiError(401, "The switch refused this token.");
    }
    if (res.status === 429) {
      const msg = "Too many wrong tokens came from this address: wait a few minutes, then try again.";
      signOut(msg);
      throw new ApiError(429, msg);
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try {
        const j = await res.json();
        if (j && j.error) msg = j.error;
      } catch {
        /* not JSON */
      }
      throw new ApiError(res.status, msg);
    }
    if (raw) return res;
    if (res.status === 204) return null;
    return res.json();
  }

  /** Runs an API call, showing its error as a toast; returns undefined on failure. */
  async function attempt(fn) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 429)) {
        toast(e.message || String(e));
      }
      return undefined;
    }
  }

  // -- signing in ------------------------------------------------------------------------
  function showSignIn(message) {
    $("#signin").hidden = false;
    $("#tabs").hidden = true;
    $("#top-status").hidden = true;
    for (const t of TABS) $(`#${t}`).hidden = true;
    $("#signin-error").textContent = message || "";
    $("#token").value = "";
    $("#token").focus();
  }

  function signOut(message) {
    state.signedIn = false;
    state.token = "";
    localStorage.removeItem(TOKEN_KEY);
    stopLive();
    showSignIn(message);
  }

  async function signIn(token) {
    state.token = token;
    let status;
    try {
      status = await api("api/status");
    } catch (e) {
      if (e.status !== 401 && e.status !== 429) showSignIn(e.message);
      return;
    }
    localStorage.setItem(TOKEN_KEY, token);
    state.signedIn = true;
    state.status = status;
    $("#signin").hidden = true;
    $("#tabs").hidden = false;
    $("#top-status").hidden = false;
    $("#token").value = "";
    fillQueueSelects(status.queues || []);
    showTab(tabFromHash());
    startLive();
  }

  // -- tabs ------------------------------------------------------------------------------
  function tabFromHash() {
    const t = location.hash.replace(/^#/, "");
    return TABS.includes(t) ? t : "wallboard";
  }

  function showTab(tab) {
    state.tab = tab;
    for (const t of TABS) {
      const button = $(`#tab-${t}`);
      const selected = t === tab;
      button.setAttribute("aria-selected", String(selected));
      button.tabIndex = selected ? 0 : -1;
      $(`#${t}`).hidden = !selected;
    }
    if (location.hash !== `#${tab}`) history.replaceState(null, "", `#${tab}`);
    if (!state.signedIn) return;
    if (tab === "reports" && !state.reportsLoaded) initDates().then(loadReports);
    if (tab === "missed" && !state.missedLoaded) initDates().then(loadMissed);
    if (tab === "voicemail") loadVoicemail();
    if (tab === "wallboard") refreshWallboard();
  }

  function tabKeys(ev) {
    const i = TABS.indexOf(state.tab);
    let next = null;
    if (ev.key === "ArrowRight") next = TABS[(i + 1) % TABS.length];
    else if (ev.key === "ArrowLeft") next = TABS[(i + TABS.length - 1) % TABS.length];
    else if (ev.key === "Home") next = TABS[0];
    else if (ev.key === "End") next = TABS[TABS.length - 1];
    if (next) {
      ev.preventDefault();
      showTab(next);
      $(`#tab-${next}`).focus();
    }
  }

  // -- live updates: the event stream plus periodic GETs ----------------------------------
  function startLive() {
    connectEvents();
    schedulePoll();
    refreshWallboard();
  }

  function stopLive() {
    clearTimeout(state.pollTimer);
    clearTimeout(state.refreshTimer);
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      ws.onclose = null;
      ws.close();
    }
    setLive(false);
  }

  function setLive(live) {
    state.wsLive = live;
    const el = $("#live");
    el.dataset.live = String(live);
    el.textContent = live ? "live" : "reconnecting…";
    el.title = live
      ? "Connected to the switch's event stream"
      : "Not connected to the event stream: refreshing every few seconds";
  }

  function connectEvents() {
    if (!state.signedIn) return;
    const url = new URL("api/events", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", state.token);
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch {
      setTimeout(connectEvents, state.wsRetry);
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      state.wsRetry = 1000;
      setLive(true);
      refreshWallboard(); // what happened while we were away
    };
    ws.onmessage = (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch {
        return;
      }
      onEvent(event);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      setLive(false);
      if (!state.signedIn) return;
      setTimeout(connectEvents, state.wsRetry);
      state.wsRetry = Math.min(state.wsRetry * 2, 15000);
      refreshSoon(); // a GET tells us whether the token still holds
    };
  }

  function onEvent(event) {
    if (event.type === "operator" && event.operator) {
      state.operators.set(event.operator.agent, event.operator);
      renderOperators();
    } else if (event.type === "call" && event.call) {
      const call = event.call;
      if (event.event === "ended") state.calls.delete(call.id);
      else state.calls.set(call.id, call);
      renderCalls();
      refreshSoon();
    } else if (event.type === "queue") {
      refreshSoon();
    }
  }

  function schedulePoll() {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(
      async () => {
        if (!state.signedIn) return;
        await refreshWallboard();
        schedulePoll();
      },
      state.wsLive ? POLL_LIVE : POLL_OFFLINE,
    );
  }

  function refreshSoon() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refreshWallboard, 150);
  }

  async function refreshWallboard() {
    if (!state.signedIn) return;
    if (state.refreshing) return state.refreshing;
    state.refreshing = (async () => {
      try {
        const [status, queues, operators, calls] = await Promise.all([
          api("api/status"),
          api("api/queues"),
          api("api/operators"),
          api("api/calls"),
        ]);
        const received = nowLocal();
        state.status = status;
        state.queues = queues.map((q) => ({ ...q, received }));
        state.operators = new Map(operators.map((o) => [o.agent, o]));
        state.calls = new Map(calls.map((c) => [c.id, c]));
        fillQueueSelects(status.queues || queues.map((q) => q.name));
        renderSummary();
        renderQueues();
        renderOperators();
        renderCalls();
        document.body.dataset.updated = String(received);
      } catch (e) {
        if (e instanceof ApiError && e.status === 0) setLive(false);
      } finally {
        state.refreshing = null;
      }
    })();
    return state.refreshing;
  }

  // -- wallboard -------------------------------------------------------------------------
  function renderSummary() {
    const s = state.status;
    if (!s) return;
    const phones = Object.values(s.registrations || {}).reduce((a, b) => a + b, 0);
    $("#summary").textContent =
      `${s.calls_active} active call${s.calls_active === 1 ? "" : "s"} · ` +
      `${phones} phone${phones === 1 ? "" : "s"} registered · v${s.version}`;
  }

  /** A span whose text counts up from `t0` (browser clock seconds) every second. */
  function ticker(t0, cls) {
    const span = h("span", { class: `tick ${cls || ""}`.trim(), dataset: { t0: String(t0) } });
    span.textContent = duration(nowLocal() - t0);
    return span;
  }

  /** ... and one that counts down to `t1`. */
  function countdown(t1) {
    const span = h("span", { class: "tick", dataset: { t1: String(t1) } });
    span.textContent = duration(t1 - nowLocal());
    return span;
  }

  function tick() {
    const now = nowLocal();
    for (const e of $$("[data-t0]")) e.textContent = duration(now - Number(e.dataset.t0));
    for (const e of $$("[data-t1]")) e.textContent = duration(Number(e.dataset.t1) - now);
  }

  function stat(label, value, cls) {
    return h(
      "div",
      { class: `stat ${cls || ""}`.trim() },
      h("span", { class: "stat-value" }, value),
      h("span", { class: "stat-label" }, label),
    );
  }

  function renderQueues() {
    const box = $("#queues");
    fill(box);
    if (!state.queues.length) {
      box.append(h("p", { class: "empty" }, "No queues in the configuration."));
      return;
    }
    for (const q of state.queues) {
      const t = q.today || {};
      const waiting = q.waiting || [];
      // the longest wait counts up from when the oldest caller joined
      const longest = waiting.length
        ? ticker(q.received - Math.max(...waiting.map((w) => w.wait || 0)), "longest")
        : q.longest_wait != null
          ? duration(q.longest_wait)
          : "–";
      const card = h(
        "section",
        { class: "queue card", "aria-label": `Queue ${q.name}`, dataset: { queue: q.name } },
        h(
          "header",
          null,
          h("h3", null, q.name),
          h("span", { class: "tag" }, q.strategy || ""),
        ),
        h(
          "div",
          { class: "stats" },
          stat("waiting", String(waiting.length), waiting.length ? "alert" : ""),
          stat("longest wait", longest),
          stat("handling ratio today", percent(t.handling_ratio), "ratio"),
          stat("service level today", percent(t.service_level), "service"),
        ),
        h(
          "p",
          { class: "queue-line" },
          `Operators: ${q.logged_in} logged in, ${q.available} available, ${q.free} free. ` +
            `Today: ${t.offered ?? 0} offered, ${t.answered ?? 0} answered, ${t.abandoned ?? 0} abandoned.`,
        ),
        waitingTable(q, waiting),
      );
      box.append(card);
    }
  }

  function waitingTable(q, waiting) {
    if (!waiting.length) return h("p", { class: "empty waiting-empty" }, "Nobody is waiting.");
    const rows = [...waiting]
      .sort((a, b) => (a.position ?? 0) - (b.position ?? 0))
      .map((w) =>
        h(
          "tr",
          { dataset: { caller: w.caller } },
          h("td", { class: "num" }, w.position ?? ""),
          h(
            "td",
            { title: `call ${w.caller}` },
            h("span", { class: "caller-number" }, w.number || "unknown"),
            w.name ? h("span", { class: "sub" }, ` ${w.name}`) : null,
          ),
          h("td", { class: "num" }, ticker(q.received - (w.wait || 0), "wait")),
          h(
            "td",
            null,
            w.state === "ringing" && w.ringing && w.ringing.length
              ? `ringing ${w.ringing.map(operatorName).join(", ")}`
              : w.state || "waiting",
          ),
        ),
      );
    return h(
      "table",
      { class: "grid waiting", "aria-label": `Callers waiting in ${q.name}` },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", { scope: "col", class: "num" }, "#"),
          h("th", { scope: "col" }, "Caller"),
          h("th", { scope: "col", class: "num" }, "Waiting"),
          h("th", { scope: "col" }, "State"),
        ),
      ),
      h("tbody", null, rows),
    );
  }

  /** Keeps one <tr> per key in `tbody` (so buttons survive refreshes), in `items` order. */
  function syncRows(tbody, items, keyOf, create, update) {
    const old = new Map($$(":scope > tr", tbody).map((tr) => [tr.dataset.key, tr]));
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      let tr = old.get(key);
      old.delete(key);
      if (!tr) {
        tr = create(item);
        tr.dataset.key = key;
      }
      update(tr, item);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
  }

  const STATUS_TEXT = { logged_out: "logged out", available: "available", paused: "paused" };
  const STATE_TEXT = { idle: "idle", ringing: "ringing", talking: "talking", wrap_up: "wrap-up" };

  function renderOperators() {
    const ops = [...state.operators.values()].sort((a, b) =>
      a.agent.localeCompare(b.agent, undefined, { numeric: true }),
    );
    $("#operators-empty").hidden = ops.length > 0;
    syncRows($("#operators"), ops, (o) => o.agent, createOperatorRow, updateOperatorRow);
  }

  function createOperatorRow(op) {
    const label = op.name && op.name !== op.agent ? `${op.name} (${op.agent})` : op.agent;
    const button = (action, text) =>
      h("button", {
        type: "button",
        class: `op-action ${action}`,
        dataset: { action, agent: op.agent },
        "aria-label": `${text} ${label}`,
        text,
        onclick: () => operatorAction(op.agent, action),
      });
    return h(
      "tr",
      { class: "operator", dataset: { agent: op.agent } },
      h("th", { scope: "row", class: "op-name" }),
      h("td", { class: "op-phone" }),
      h("td", { class: "op-status" }),
      h("td", { class: "op-state" }),
      h("td", { class: "op-since num" }),
      h("td", { class: "op-queues" }),
      h("td", { class: "op-answered num" }),
      h("td", { class: "op-missed num" }),
      h("td", { class: "op-talk num" }),
      h(
        "td",
        { class: "op-actions" },
        button("login", "Log in"),
        button("logout", "Log out"),
        button("pause", "Pause"),
        button("unpause", "Unpause"),
      ),
    );
  }

  function updateOperatorRow(tr, op) {
    tr.dataset.status = op.status;
    tr.dataset.state = op.state;
    const name = $(".op-name", tr);
    fill(name, op.name || op.agent, h("span", { class: "sub" }, ` ${op.agent}`));
    fill($(".op-phone", tr), 
      h(
        "span",
        { class: `badge ${op.registered ? "ok" : "off"}` },
        op.registered ? "online" : "offline",
      ),
    );
    const status = h("span", { class: `badge status-${op.status}` }, STATUS_TEXT[op.status] || op.status);
    fill($(".op-status", tr), 
      status,
      op.status === "paused" && op.pause_reason ? h("span", { class: "sub" }, ` ${op.pause_reason}`) : null,
    );
    let stateText = STATE_TEXT[op.state] || op.state || "";
    if (op.status === "logged_out" && op.state === "idle") stateText = "–";
    const with_ = op.caller ? ` ${op.state === "ringing" ? "for" : "with"} ${op.number || op.caller}` : "";
    const stateCell = $(".op-state", tr);
    fill(stateCell, h("span", { class: `state state-${op.state}` }, stateText + with_));
    if (op.state === "wrap_up" && op.wrap_until) {
      stateCell.append(" (", countdown(op.wrap_until - state.skew), " left)");
    }
    if (op.other_calls) stateCell.append(h("span", { class: "sub" }, " on another call"));
    const since = $(".op-since", tr);
    if (op.since != null) {
      const t0 = op.since - state.skew;
      const cur = $("[data-t0]", since);
      if (!cur || cur.dataset.t0 !== String(t0)) fill(since, ticker(t0, "since"));
    } else {
      since.textContent = "–";
    }
    $(".op-queues", tr).textContent = (op.queues || []).join(", ");
    const td = op.today || {};
    $(".op-answered", tr).textContent = String(td.answered ?? 0);
    $(".op-missed", tr).textContent = String(td.missed ?? 0);
    $(".op-talk", tr).textContent = duration(td.talk_time ?? 0);
    const show = {
      login: op.status === "logged_out",
      logout: op.status !== "logged_out",
      pause: op.status === "available",
      unpause: op.status === "paused",
    };
    for (const b of $$("button[data-action]", tr)) {
      b.hidden = !show[b.dataset.action];
      b.disabled = false;
    }
  }

  async function operatorAction(agent, action) {
    let body;
    if (action === "pause") {
      const reason = await askPauseReason(agent);
      if (reason === null) return;
      body = { reason };
    }
    const buttons = $$(`#operators button[data-agent="${CSS.escape(agent)}"]`);
    buttons.forEach((b) => (b.disabled = true));
    const op = await attempt(() =>
      api(`api/operators/${encodeURIComponent(agent)}/${action}`, { method: "POST", body }),
    );
    buttons.forEach((b) => (b.disabled = false));
    if (op) {
      state.operators.set(op.agent, op);
      renderOperators();
      refreshSoon();
    }
  }

  function askPauseReason(agent) {
    const dialog = $("#pause-dialog");
    const input = $("#pause-reason");
    $("#pause-title").textContent = `Pause ${operatorName(agent)}`;
    input.value = "break";
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          const reason = input.value.trim();
          resolve(dialog.returnValue === "pause" ? reason || "break" : null);
        },
        { once: true },
      );
      dialog.returnValue = "";
      dialog.showModal();
      input.select();
    });
  }

  function renderCalls() {
    const calls = [...state.calls.values()].sort((a, b) => (a.started || 0) - (b.started || 0));
    $("#calls-empty").hidden = calls.length > 0;
    $("#calls-table").hidden = calls.length === 0;
    syncRows($("#calls"), calls, (c) => c.id, createCallRow, updateCallRow);
  }

  function createCallRow(call) {
    return h(
      "tr",
      { class: "call", dataset: { call: call.id } },
      h("td", { class: "call-caller" }),
      h("td", { class: "call-callee" }),
      h("td", { class: "call-kind" }),
      h("td", { class: "call-where" }),
      h("td", { class: "call-state" }),
      h("td", { class: "call-time num" }),
      h(
        "td",
        null,
        h("button", {
          type: "button",
          class: "danger",
          "aria-label": `Hang up call from ${call.caller || "unknown"}`,
          text: "Hang up",
          onclick: () => hangUp(call.id),
        }),
      ),
    );
  }

  function updateCallRow(tr, call) {
    fill($(".call-caller", tr), 
      call.caller || "unknown",
      call.caller_name ? h("span", { class: "sub" }, ` ${call.caller_name}`) : null,
    );
    $(".call-callee", tr).textContent = call.callee || "";
    $(".call-kind", tr).textContent = call.kind || "";
    const where = call.queue
      ? `queue ${call.queue}${call.agent ? ` → ${operatorName(call.agent)}` : ""}`
      : call.block
        ? `block ${call.block}`
        : "";
    $(".call-where", tr).textContent = where;
    let callState = call.answered ? "connected" : "ringing";
    if (call.queue) callState = call.agent ? "with operator" : "waiting in queue";
    $(".call-state", tr).textContent = callState;
    const t0 = (call.started || nowLocal() + state.skew) - state.skew;
    const cell = $(".call-time", tr);
    const cur = $("[data-t0]", cell);
    if (!cur || cur.dataset.t0 !== String(t0)) fill(cell, ticker(t0));
  }

  async function hangUp(id) {
    const call = state.calls.get(id);
    const who = call ? `${call.caller || "unknown"} → ${call.callee || ""}` : id;
    if (!confirm(`Hang up the call ${who}?`)) return;
    const done = await attempt(() => api(`api/calls/${encodeURIComponent(id)}`, { method: "DELETE" }));
    if (done !== undefined) {
      state.calls.delete(id);
      renderCalls();
      refreshSoon();
    }
  }

  // -- reports ---------------------------------------------------------------------------
  function fillQueueSelects(names) {
    for (const select of $$('select[name="queue"]')) {
      const have = $$("option", select).map((o) => o.value).filter(Boolean);
      if (have.join("\n") === names.join("\n")) continue;
      const value = select.value;
      fill(select, h("option", { value: "" }, "All queues"), ...names.map((n) => h("option", { value: n }, n)));
      select.value = names.includes(value) ? value : "";
    }
  }

  /** Learns the switch's time zone and today from a one-day report, then sets the dates. */
  async function initDates() {
    if (state.datesSet) return;
    state.datesSet = true;
    try {
      const r = await api("api/reports/load");
      if (r && r.period && r.period.timezone) state.tz = r.period.timezone;
    } catch {
      /* keep the browser's zone */
    }
    const last = today();
    setRange($("#reports-form"), addDays(last, -6), last);
    setRange($("#missed-form"), last, last);
  }

  function setRange(form, first, last) {
    form.elements.from.value = first;
    form.elements.to.value = last;
  }

  function reportQuery(form, extra) {
    const p = new URLSearchParams();
    p.set("from", form.elements.from.value);
    p.set("to", form.elements.to.value);
    if (form.elements.queue.value) p.set("queue", form.elements.queue.value);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p.toString();
  }

  const COLORS = {
    offered: "#64748b",
    answered: "#15803d",
    abandoned: "#b91c1c",
    missed: "#c2410c",
    rejected: "#7c3aed",
    ratio: "#1d4ed8",
    service: "#0e7490",
    staff: "#1d4ed8",
  };

  function chartDefaults() {
    if (!window.Chart) return false;
    const reduce = window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches;
    Chart.defaults.animation = reduce ? false : { duration: 300 };
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 13;
    Chart.defaults.color = "#1f2937";
    Chart.defaults.maintainAspectRatio = false;
    return true;
  }

  function drawChart(id, config) {
    const canvas = document.getElementById(id);
    const old = Chart.getChart(canvas);
    if (old) old.destroy();
    return new Chart(canvas, config);
  }

  async function loadReports(ev) {
    if (ev) ev.preventDefault();
    const form = $("#reports-form");
    const first = form.elements.from.value;
    const last = form.elements.to.value;
    const note = $("#reports-note");
    if (!first || !last) return;
    if (first > last) {
      note.textContent = "“From” is after “To”.";
      return;
    }
    note.textContent = "Loading…";
    const q = reportQuery(form);
    const [load, operators, staffing] = await Promise.all([
      attempt(() => api(`api/reports/load?${q}`)),
      attempt(() => api(`api/reports/operators?${q}`)),
      attempt(() => api(`api/reports/staffing?${q}`)),
    ]);
    if (!load || !operators || !staffing) {
      note.textContent = "Could not load the reports.";
      return;
    }
    state.reportsLoaded = true;
    if (load.period && load.period.timezone) state.tz = load.period.timezone;
    if (!window.Chart || !chartDefaults()) {
      note.textContent = "The chart library did not load.";
    }
    renderTotals(load);
    renderOperatorsReport(operators);
    if (window.Chart) {
      drawDaily(load);
      drawHours(load);
      drawOperators(operators);
      drawStaffing(staffing);
    }
    note.textContent = "";
    await drawHeatmap(form, first, last);
    document.body.dataset.reports = String(Date.now());
  }

  function renderTotals(load) {
    const t = load.total;
    const n = load.service_seconds;
    fill($("#reports-totals"), 
      stat("offered", String(t.offered)),
      stat("answered", String(t.answered)),
      stat("abandoned", String(t.abandoned)),
      stat("handling ratio", percent(t.handling_ratio), "ratio"),
      stat(`answered within ${n} s`, percent(t.service_level), "service"),
      stat("average wait (answered)", seconds1(t.avg_wait_answered)),
      stat("longest wait (answered)", seconds1(t.max_wait_answered)),
    );
  }

  function drawDaily(load) {
    const days = load.days;
    const pct = (x) => (x == null ? null : Math.round(x * 1000) / 10);
    drawChart("chart-daily", {
      data: {
        labels: days.map((d) => d.label),
        datasets: [
          {
            type: "line",
            label: "Handling ratio (%)",
            data: days.map((d) => pct(d.handling_ratio)),
            borderColor: COLORS.ratio,
            backgroundColor: COLORS.ratio,
            yAxisID: "share",
            spanGaps: true,
            pointRadius: 4,
          },
          {
            type: "line",
            label: `Service level, ${load.service_seconds} s (%)`,
            data: days.map((d) => pct(d.service_level)),
            borderColor: COLORS.service,
            backgroundColor: COLORS.service,
            borderDash: [6, 4],
            yAxisID: "share",
            spanGaps: true,
            pointRadius: 4,
            pointStyle: "rectRot",
          },
          {
            type: "bar",
            label: "Offered",
            data: days.map((d) => d.offered),
            backgroundColor: "rgba(100,116,139,0.35)",
            yAxisID: "calls",
          },
          {
            type: "bar",
            label: "Answered",
            data: days.map((d) => d.answered),
            backgroundColor: "rgba(21,128,61,0.55)",
            yAxisID: "calls",
          },
        ],
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          share: { position: "left", min: 0, max: 100, title: { display: true, text: "%" } },
          calls: {
            position: "right",
            beginAtZero: true,
            ticks: { precision: 0 },
            grid: { drawOnChartArea: false },
            title: { display: true, text: "callers" },
          },
        },
      },
    });
  }

  function drawHours(load) {
    const hours = load.hours;
    const lost = (r) => r.offered - r.answered - r.abandoned - r.waiting;
    drawChart("chart-hours", {
      type: "bar",
      data: {
        labels: hours.map((r) => r.label.slice(0, 2)),
        datasets: [
          { label: "Answered", data: hours.map((r) => r.answered), backgroundColor: COLORS.answered },
          { label: "Abandoned", data: hours.map((r) => r.abandoned), backgroundColor: COLORS.abandoned },
          { label: "Left otherwise", data: hours.map(lost), backgroundColor: COLORS.missed },
          { label: "Still waiting", data: hours.map((r) => r.waiting), backgroundColor: COLORS.offered },
        ],
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, title: { display: true, text: "hour of the day" } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
  }

  function drawOperators(report) {
    const ops = report.operators;
    drawChart("chart-operators", {
      type: "bar",
      data: {
        labels: ops.map((o) => operatorName(o.agent)),
        datasets: [
          { label: "Answered", data: ops.map((o) => o.answered), backgroundColor: COLORS.answered },
          { label: "Missed", data: ops.map((o) => o.missed), backgroundColor: COLORS.missed },
          { label: "Rejected", data: ops.map((o) => o.rejected), backgroundColor: COLORS.rejected },
        ],
      },
      options: {
        indexAxis: "y",
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "rings" } },
          y: { stacked: true },
        },
      },
    });
  }

  function drawStaffing(report) {
    const hours = report.hours;
    drawChart("chart-staffing", {
      type: "bar",
      data: {
        labels: hours.map((r) => r.hour.slice(0, 2)),
        datasets: [
          {
            label: `Operators for ${Math.round(report.target * 100)} % within ${report.service_seconds} s`,
            data: hours.map((r) => r.agents),
            backgroundColor: COLORS.staff,
          },
          {
            type: "line",
            label: "Callers per hour",
            data: hours.map((r) => r.calls_per_hour),
            borderColor: COLORS.offered,
            backgroundColor: COLORS.offered,
            yAxisID: "calls",
            pointRadius: 2,
          },
        ],
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { title: { display: true, text: "hour of the day" } },
          y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "operators" } },
          calls: {
            position: "right",
            beginAtZero: true,
            grid: { drawOnChartArea: false },
            title: { display: true, text: "callers per hour" },
          },
        },
      },
    });
  }

  /** Day × hour heatmap: one load report per day (a load report sums its hours over all
   * of its days), the last HEATMAP_MAX_DAYS days of the range at most. */
  async function drawHeatmap(form, first, last) {
    let days = daysBetween(first, last);
    const note = $("#heatmap-note");
    note.textContent = "";
    if (days.length > HEATMAP_MAX_DAYS) {
      note.textContent = `The heatmap shows the last ${HEATMAP_MAX_DAYS} days of the range.`;
      days = days.slice(-HEATMAP_MAX_DAYS);
    }
    const queue = form.elements.queue.value;
    const reports = await mapLimited(days, 4, (d) => {
      const p = new URLSearchParams({ from: d, to: d });
      if (queue) p.set("queue", queue);
      return attempt(() => api(`api/reports/load?${p}`));
    });
    if (!window.Chart) return;
    const cells = [];
    let max = 0;
    days.forEach((d, i) => {
      const r = reports[i];
      if (!r) return;
      for (const row of r.hours) {
        cells.push({ x: row.label.slice(0, 2), y: d, v: row.offered, a: row.answered });
        max = Math.max(max, row.offered);
      }
    });
    const hours = Array.from({ length: 24 }, (_, i) => String(i).padStart(2, "0"));
    $("#heatmap-box").style.height = `${Math.max(140, 70 + days.length * 26)}px`;
    drawChart("chart-heatmap", {
      type: "matrix",
      data: {
        datasets: [
          {
            label: "Callers offered",
            data: cells,
            backgroundColor: (c) => heat((c.raw && c.raw.v) || 0, max),
            borderColor: "rgba(148,163,184,0.6)",
            borderWidth: 1,
            width: ({ chart }) => Math.max(1, (chart.chartArea || {}).width / 24 - 2),
            height: ({ chart }) => Math.max(1, (chart.chartArea || {}).height / days.length - 2),
          },
        ],
      },
      options: {
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: (items) => `${items[0].raw.y}, ${items[0].raw.x}:00`,
              label: (item) => `${item.raw.v} offered, ${item.raw.a} answered`,
            },
          },
        },
        scales: {
          x: { type: "category", labels: hours, offset: true, grid: { display: false }, title: { display: true, text: "hour of the day" } },
          y: { type: "category", labels: days, offset: true, reverse: false, grid: { display: false } },
        },
      },
    });
    note.textContent +=
      (note.textContent ? " " : "") +
      (max ? `Darker cells had more callers; the darkest had ${max} in one hour.` : "No callers in this period.");
    $("#chart-heatmap").setAttribute(
      "aria-label",
      `Heatmap of callers offered per hour, ${days[0]} to ${days[days.length - 1]}; busiest hour ${max} callers`,
    );
  }

  function heat(v, max) {
    if (!v || !max) return "rgba(241,245,249,1)";
    const a = 0.18 + 0.82 * (v / max);
    return `rgba(29,78,216,${a.toFixed(3)})`;
  }

  async function mapLimited(items, limit, fn) {
    const out = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return out;
  }

  function renderOperatorsReport(report) {
    const table = $("#operators-report");
    const row = (o, total) =>
      h(
        "tr",
        { dataset: { agent: o.agent } },
        h("th", { scope: "row" }, total ? "Total" : operatorName(o.agent)),
        h("td", { class: "num" }, duration(o.logged_in)),
        h("td", { class: "num" }, duration(o.paused)),
        h("td", { class: "num" }, o.rung),
        h("td", { class: "num" }, o.answered),
        h("td", { class: "num" }, o.missed),
        h("td", { class: "num" }, o.rejected),
        h("td", { class: "num" }, o.completed),
        h("td", { class: "num" }, duration(o.talk_time)),
        h("td", { class: "num" }, o.avg_talk == null ? "–" : duration(o.avg_talk)),
        h("td", { class: "num" }, duration(o.wrap_up)),
        h("td", { class: "num" }, percent(o.occupancy)),
      );
    fill($("tbody", table), ...report.operators.map((o) => row(o, false)));
    fill($("tfoot", table), report.operators.length ? row(report.total, true) : "");
    $("#op-report-empty").hidden = report.operators.length > 0;
  }

  // -- missed calls ----------------------------------------------------------------------
  const RESULT_TEXT = {
    abandoned: "hung up",
    timeout: "waited too long",
    key: "pressed the exit key",
    full: "queue full",
    empty: "nobody logged in",
    removed: "removed",
    failed: "switch stopped",
  };
  const VIA_TEXT = { queue: "called again", callback: "called back", "call-in": "called in" };

  async function loadMissed(ev) {
    if (ev) ev.preventDefault();
    const form = $("#missed-form");
    const note = $("#missed-note");
    if (form.elements.from.value > form.elements.to.value) {
      note.textContent = "“From” is after “To”.";
      return;
    }
    note.textContent = "Loading…";
    const report = await attempt(() => api(`api/reports/missed?${reportQuery(form)}`));
    if (!report) {
      note.textContent = "Could not load the missed calls.";
      return;
    }
    state.missedLoaded = true;
    if (report.period && report.period.timezone) state.tz = report.period.timezone;
    let calls = report.calls;
    const open = calls.filter((c) => !c.reached_at).length;
    if (form.elements.unreached.checked) calls = calls.filter((c) => !c.reached_at);
    note.textContent = `${report.calls.length} missed, ${open} not reached yet.`;
    const rows = calls
      .slice()
      .reverse() // newest first
      .map((c) =>
        h(
          "tr",
          { dataset: { caller: c.caller }, class: c.reached_at ? "reached" : "unreached" },
          h("td", null, timeText(c.time)),
          h("td", null, c.queue),
          h("td", { class: "caller-number", title: `call ${c.caller}` }, c.number || "unknown"),
          h("td", { class: "num" }, duration(c.wait)),
          h("td", null, RESULT_TEXT[c.result] || c.result),
          h("td", null, attemptsList(c.attempts)),
          h(
            "td",
            null,
            c.reached_at
              ? `${VIA_TEXT[c.reached_via] || c.reached_via} ${timeText(c.reached_at)}` +
                  (c.reached_by ? `, ${operatorName(c.reached_by)}` : "")
              : h("span", { class: "badge alert" }, "not yet"),
          ),
        ),
      );
    fill($("#missed-table tbody"), ...rows);
    $("#missed-empty").hidden = rows.length > 0;
    $("#missed-table").hidden = rows.length === 0;
  }

  function attemptsList(attempts) {
    if (!attempts || !attempts.length) return h("span", { class: "sub" }, "nobody");
    return h(
      "ul",
      { class: "attempts" },
      attempts.map((a) => h("li", null, `${operatorName(a.agent)}: ${duration(a.seconds)} ${a.result}`)),
    );
  }

  // -- voicemail -------------------------------------------------------------------------
  async function loadVoicemail() {
    const note = $("#voicemail-note");
    note.textContent = "Loading…";
    const items = await attempt(() => api("api/voicemail"));
    if (!items) {
      note.textContent = "Could not load the voicemail.";
      return;
    }
    const unheard = items.filter((m) => !m.heard).length;
    note.textContent = `${items.length} message${items.length === 1 ? "" : "s"}, ${unheard} new.`;
    items.sort((a, b) => (b.received || 0) - (a.received || 0));
    const rows = items.map((m) => {
      const from = m.caller_name ? `${m.caller_name} (${m.caller || "unknown"})` : m.caller || "unknown";
      return h(
        "tr",
        { dataset: { id: String(m.id) }, class: m.heard ? "heard" : "new" },
        h("td", null, timeText(m.received)),
        h("td", null, m.box),
        h("td", null, from),
        h("td", { class: "num" }, duration(m.seconds)),
        h("td", { class: "vm-heard" }, m.heard ? "heard" : h("span", { class: "badge alert" }, "new")),
        h(
          "td",
          null,
          h("button", {
            type: "button",
            class: "play",
            dataset: { id: String(m.id) },
            "aria-label": `Play message from ${from}`,
            text: "Play",
            onclick: () => play(m, from),
          }),
        ),
      );
    });
    fill($("#voicemail-table tbody"), ...rows);
    $("#voicemail-empty").hidden = rows.length > 0;
    $("#voicemail-table").hidden = rows.length === 0;
  }

  /** Fetches the WAV with the bearer header and plays it through the <audio> element. */
  async function play(message, from) {
    const res = await attempt(() => api(message.url, { raw: true }));
    if (!res) return;
    const blob = await res.blob();
    if (state.playing) URL.revokeObjectURL(state.playing.url);
    const url = URL.createObjectURL(blob);
    state.playing = { id: message.id, url };
    const audio = $("#audio");
    audio.src = url;
    audio.dataset.id = String(message.id);
    $("#player-title").textContent = `Message from ${from}, ${timeText(message.received)}`;
    const link = $("#player-download");
    link.href = url;
    link.download = `voicemail-${message.id}.wav`;
    $("#player").hidden = false;
    try {
      await audio.play();
    } catch {
      /* autoplay refused: the controls are there */
    }
    if (!message.heard) {
      const ok = await attempt(() => api(`api/voicemail/${message.id}/heard`, { method: "POST" }));
      if (ok !== undefined) {
        message.heard = true;
        const cell = $(`#voicemail-table tr[data-id="${message.id}"] .vm-heard`);
        if (cell) cell.textContent = "heard";
      }
    }
  }

  // -- start -----------------------------------------------------------------------------
  function init() {
    $("#signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("#token").value.trim();
      if (token) signIn(token);
    });
    $("#sign-out").addEventListener("click", () => signOut(""));
    for (const b of $$("#tabs [role=tab]")) b.addEventListener("click", () => showTab(b.dataset.tab));
    $("#tabs").addEventListener("keydown", tabKeys);
    window.addEventListener("hashchange", () => state.signedIn && showTab(tabFromHash()));
    $("#reports-form").addEventListener("submit", loadReports);
    $("#missed-form").addEventListener("submit", loadMissed);
    $("#voicemail-refresh").addEventListener("click", loadVoicemail);
    for (const b of $$("#reports-form [data-days]")) {
      b.addEventListener("click", () => {
        const last = today();
        setRange($("#reports-form"), addDays(last, 1 - Number(b.dataset.days)), last);
        loadReports();
      });
    }
    setInterval(tick, 1000);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.signedIn) refreshWallboard();
    });
    if (state.token) signIn(state.token);
    else showSignIn("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
