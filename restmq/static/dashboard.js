// RestMQ dashboard: an operator's console on the broker's own API. It renders the
// `stats` snapshots of /dashboard/events (one a second, over the broker's own
// Server-Sent Events), keeps ten minutes of rates in the page, and drives the
// queue view (/q/<q>/messages, /q/<q>/consumers, /settings/<q>) and the actions
// (/control, /p, /q/<q>/redrive, DELETE /q/<q>, POST /q/<q>, /queue del).
// Plain JavaScript, no build step, no library. URLs are relative to the page, so
// it works behind a reverse proxy that adds a path prefix.
//
// Credentials: the page asks for none. With an ACL the browser's own Basic
// prompt covers every request, or a token in the URL fragment
// (/dashboard/#token=SECRET; the fragment never leaves the browser) is kept for
// this tab and sent as "Authorization: Bearer" (and ?token= on the event stream,
// which cannot carry headers).
"use strict";

(function () {
  const WINDOW = 600;           // seconds of rates kept and drawn (ten minutes)
  const PAGE = 20;              // messages per page of the queue view
  const DETAIL_REFRESH_MS = 2000;
  const TOKEN_KEY = "restmq-dashboard-token";
  const SETTINGS = ["maxlen", "overflow", "max_receives", "lease_seconds", "history_size", "ttl"];
  const root = new URL("../", document.baseURI);
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- credentials

  let token = sessionStorage.getItem(TOKEN_KEY);

  function fragment() {
    return new URLSearchParams(location.hash.replace(/^#/, ""));
  }

  (function takeToken() {
    const params = fragment();
    if (!params.has("token")) return;
    token = params.get("token") || null;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    params.delete("token");
    // out of the address bar (and of screenshots and copied links)
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  })();

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function api(path, query) {
    const url = new URL(path, root);
    for (const [name, value] of Object.entries(query || {})) url.searchParams.set(name, value);
    return url.toString();
  }

  async function request(method, path, options) {
    const {query, form, json} = options || {};
    const headers = {"Accept": "application/json"};
    if (token) headers["Authorization"] = "Bearer " + token;
    const init = {method: method, headers: headers, credentials: "same-origin", cache: "no-store"};
    if (form) init.body = new URLSearchParams(form);
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(api(path, query), init);
    } catch (error) {
      throw new ApiError(0, "network", "the broker could not be reached (" + error.message + ")");
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && body.error;
      throw new ApiError(response.status, detail ? detail.code : "http_" + response.status,
                         detail ? detail.message : (response.statusText || "HTTP " + response.status));
    }
    return body;
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- formatting

  function text(node, value) {
    const shown = value === null || value === undefined ? "–" : String(value);
    if (node.textContent !== shown) node.textContent = shown;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
    if (seconds < 60) return Math.max(0, seconds).toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function rate(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return value < 10 ? value.toFixed(1) : String(Math.round(value));
  }

  function bytes(value) {
    if (!Number.isFinite(value)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function subscribers(counts) {
    const parts = Object.keys(counts || {}).sort().map((name) => name + " " + counts[name]);
    return parts.length ? parts.join(", ") : "0";
  }

  function errorText(error) {
    if (!(error instanceof ApiError) || !error.status) return error.message;
    return error.message + " (" + error.status + " " + error.code + ")";
  }

  function queueLink(queue) {
    return "#" + new URLSearchParams({queue: queue}).toString();
  }

  // ---------------------------------------------------------------- notices

  // An action's result or error stays until its Dismiss button is pressed: the
  // snapshots that arrive every second never touch these.
  function notify(container, kind, message) {
    const box = document.createElement("div");
    box.className = "notice " + kind;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    const words = document.createElement("span");
    words.className = "notice-text";
    words.textContent = message;
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "dismiss";
    dismiss.textContent = "Dismiss";
    dismiss.setAttribute("aria-label", "Dismiss: " + message);
    dismiss.addEventListener("click", () => {
      const next = box.nextElementSibling || box.previousElementSibling;
      box.remove();
      const focus = next && next.querySelector(".dismiss");
      if (focus) focus.focus();
    });
    box.append(words, dismiss);
    container.prepend(box);
    return box;
  }

  async function act(container, button, label, run, describe) {
    button.disabled = true;
    try {
      const body = await run();
      notify(container, "ok", describe(body));
      return body;
    } catch (error) {
      notify(container, "error", label + " failed: " + errorText(error));
      return null;
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- rates, kept in the page

  // One slot per snapshot in a ring of WINDOW; every series shares the times.
  const times = new Float64Array(WINDOW).fill(NaN);
  let samples = 0;
  const blank = () => new Float64Array(WINDOW).fill(NaN);
  const broker = {published: blank(), delivered: blank(), memory: blank()};
  const perQueue = new Map();   // queue -> {published, delivered, last: {time, published, delivered}}
  const latest = new Map();     // queue -> its entry in the last snapshot
  let lastSnapshot = null;

  function record(snapshot) {
    const slot = samples % WINDOW;
    times[slot] = snapshot.time;
    let published = 0;
    let delivered = 0;
    let counted = false;
    const seen = new Set();
    for (const info of snapshot.queues) {
      seen.add(info.name);
      let series = perQueue.get(info.name);
      if (!series) {
        series = {published: blank(), delivered: blank(), last: null};
        perQueue.set(info.name, series);
      }
      let inRate = NaN;
      let outRate = NaN;
      const last = series.last;
      if (last && snapshot.time > last.time) {
        const seconds = snapshot.time - last.time;
        // a counter that went back (another broker reset it) is no negative rate
        inRate = Math.max(0, info.published - last.published) / seconds;
        outRate = Math.max(0, info.delivered - last.delivered) / seconds;
        published += inRate;
        delivered += outRate;
        counted = true;
      }
      series.published[slot] = inRate;
      series.delivered[slot] = outRate;
      series.last = {time: snapshot.time, published: info.published, delivered: info.delivered};
    }
    for (const queue of Array.from(perQueue.keys())) {
      if (!seen.has(queue)) perQueue.delete(queue);
    }
    broker.published[slot] = counted ? published : NaN;
    broker.delivered[slot] = counted ? delivered : NaN;
    broker.memory[slot] = snapshot.memory ? snapshot.memory.used : NaN;
    samples += 1;
  }

  function current(values) {
    return samples ? values[(samples - 1) % WINDOW] : NaN;
  }

  function top(...series) {
    let most = 0;
    for (const values of series) {
      for (const value of values) if (Number.isFinite(value) && value > most) most = value;
    }
    if (most <= 0) return 1;
    // a round top: 1, 2 or 5 times a power of ten
    const power = Math.pow(10, Math.floor(Math.log10(most)));
    for (const step of [1, 2, 5, 10]) if (most <= step * power) return step * power;
    return 10 * power;
  }

  // An SVG path of one series over the last WINDOW seconds: x is time, a gap in
  // the samples (the stream was down) lifts the pen.
  function path(values, highest) {
    if (!samples) return "";
    const now = times[(samples - 1) % WINDOW];
    const kept = Math.min(samples, WINDOW);
    let d = "";
    let previous = NaN;
    for (let i = 0; i < kept; i++) {
      const slot = (samples - kept + i) % WINDOW;
      const value = values[slot];
      const when = times[slot];
      const pen = Number.isFinite(previous) && when - previous < 5;
      previous = when;
      if (!Number.isFinite(value) || now - when > WINDOW) {
        previous = NaN;
        continue;
      }
      const x = 600 - (now - when) * (600 / WINDOW);
      const y = 116 - (value / highest) * 110;
      d += (pen && d ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    }
    return d;
  }

  function drawRates(svg, series, names) {
    const highest = top(series.published, series.delivered);
    svg.querySelector("path.published").setAttribute("d", path(series.published, highest));
    svg.querySelector("path.delivered").setAttribute("d", path(series.delivered, highest));
    const inNow = rate(current(series.published));
    const outNow = rate(current(series.delivered));
    text($(names + "-published"), inNow);
    text($(names + "-delivered"), outNow);
    text($(names + "-max"), highest);
    svg.setAttribute("aria-label", svg.dataset.label + ": published " + inNow + "/s, delivered " +
                     outNow + "/s now, top of the scale " + highest + "/s");
  }

  function drawBroker(snapshot) {
    drawRates($("broker-chart"), broker, "broker");
    const memory = snapshot.memory;
    const svg = $("memory-chart");
    const highest = top(broker.memory);
    svg.querySelector("path.memory").setAttribute("d", path(broker.memory, highest));
    if (memory) {
      text($("memory-used"), bytes(memory.used));
      text($("memory-detail"), "peak " + bytes(memory.peak) + " · rss " + bytes(memory.rss) + " · max " +
           (memory.max ? bytes(memory.max) + " (" + memory.policy + ")" : "none") + ", last 10 minutes");
      svg.setAttribute("aria-label", "Redis memory used: " + bytes(memory.used) + " now");
    }
  }

  // ---------------------------------------------------------------- the queue table

  function cell(row, name, numeric) {
    const td = document.createElement("td");
    td.className = name + (numeric ? " num" : "");
    row.appendChild(td);
    return td;
  }

  function statusVerb(status) {
    return status === "stopped" ? "Resume" : "Pause";
  }

  function policyVerb(policy) {
    return policy === "roundrobin" ? "Switch to broadcast" : "Switch to roundrobin";
  }

  function setStatus(queue, status, container, button) {
    const next = status === "stopped" ? "start" : "stop";
    return act(container, button, (next === "stop" ? "Pause " : "Resume ") + queue,
      () => request("POST", "control/" + enc(queue), {form: {status: next}}),
      (body) => body.status === "stopped"
        ? "Paused " + queue + ": its streaming consumers get nothing until it is resumed."
        : "Resumed " + queue + ": its backlog flows to its consumers.")
      .then((body) => body && applyInfo(queue, {status: body.status}));
  }

  function setPolicy(queue, policy, container, button) {
    const next = policy === "roundrobin" ? "broadcast" : "roundrobin";
    return act(container, button, "Switch " + queue + " to " + next,
      () => request("POST", "p/" + enc(queue), {form: {policy: next}}),
      (body) => queue + " is now " + body.value + ".")
      .then((body) => body && applyInfo(queue, {policy: body.value}));
  }

  // an action's answer shows at once, before the next snapshot confirms it
  function applyInfo(queue, changes) {
    const info = Object.assign({}, latest.get(queue) || {name: queue}, changes);
    latest.set(queue, info);
    const row = rowOf(queue);
    if (row) {
      if (changes.status) showStatus(row, changes.status);
      if (changes.policy) showPolicy(row, changes.policy);
    }
    if (queue === selected) renderDetailInfo();
  }

  function rowOf(queue) {
    for (const row of $("queues").tBodies[0].rows) if (row.dataset.queue === queue) return row;
    return null;
  }

  function makeRow(queue) {
    const row = document.createElement("tr");
    row.dataset.queue = queue;
    const name = cell(row, "name", false);
    const link = document.createElement("a");
    link.href = queueLink(queue);
    link.textContent = queue;
    name.appendChild(link);
    for (const field of ["depth", "inflight", "delayed", "dead", "oldest", "in", "out"]) cell(row, field, true);
    cell(row, "subscribers", false);
    for (const field of ["policy", "status"]) {
      const td = cell(row, field, false);
      td.appendChild(document.createElement("span"));
      const button = document.createElement("button");
      button.type = "button";
      button.className = field + "-toggle";
      td.appendChild(button);
    }
    row.querySelector(".policy-toggle").addEventListener("click", (event) => {
      event.stopPropagation();
      setPolicy(queue, row.dataset.policy, $("overview-notices"), event.currentTarget);
    });
    row.querySelector(".status-toggle").addEventListener("click", (event) => {
      event.stopPropagation();
      setStatus(queue, row.dataset.status, $("overview-notices"), event.currentTarget);
    });
    row.addEventListener("click", (event) => {
      if (event.target.closest("a, button")) return;
      location.hash = queueLink(queue);
    });
    return row;
  }

  function showPolicy(row, policy) {
    row.dataset.policy = policy;
    text(row.querySelector("td.policy span"), policy);
    const button = row.querySelector(".policy-toggle");
    text(button, policyVerb(policy));
    button.setAttribute("aria-label", policyVerb(policy) + ": " + row.dataset.queue);
  }

  function showStatus(row, status) {
    row.dataset.status = status;
    row.classList.toggle("stopped", status === "stopped");
    text(row.querySelector("td.status span"), status);
    const button = row.querySelector(".status-toggle");
    text(button, statusVerb(status));
    button.setAttribute("aria-label", statusVerb(status) + ": " + row.dataset.queue);
  }

  function renderRow(row, info) {
    const value = (name) => row.querySelector("td." + name);
    text(value("depth"), info.len);
    text(value("inflight"), info.inflight);
    text(value("delayed"), info.delayed);
    text(value("dead"), info.dead);
    value("dead").classList.toggle("nonzero", info.dead > 0);
    text(value("oldest"), age(info.oldest_age));
    const series = perQueue.get(info.name);
    text(value("in"), series ? rate(current(series.published)) : null);
    text(value("out"), series ? rate(current(series.delivered)) : null);
    text(value("subscribers"), subscribers(info.subscribers));
    showPolicy(row, info.policy);
    showStatus(row, info.status);
  }

  function applyFilter() {
    const wanted = $("filter").value.trim();
    for (const row of $("queues").tBodies[0].rows) {
      row.hidden = wanted !== "" && !row.dataset.queue.includes(wanted);
    }
  }

  function render(snapshot) {
    text($("updated"), "updated " + clock(snapshot.time));
    if (snapshot.error) {
      showFeedError("Redis: " + snapshot.error.message);
      return;
    }
    showFeedError(null);
    lastSnapshot = snapshot;
    record(snapshot);
    text($("redis"), snapshot.redis);
    text($("queue-count"), snapshot.count);
    latest.clear();
    const body = $("queues").tBodies[0];
    const rows = new Map(Array.from(body.rows, (row) => [row.dataset.queue, row]));
    let next = body.firstElementChild;
    for (const info of snapshot.queues) {
      latest.set(info.name, info);
      const row = rows.get(info.name) || makeRow(info.name);
      rows.delete(info.name);
      // keep the rows in the snapshot's order (sorted by name), moving as little as possible
      if (row === next) next = next.nextElementSibling;
      else body.insertBefore(row, next);
      renderRow(row, info);
    }
    for (const row of rows.values()) row.remove();
    $("empty").hidden = snapshot.queues.length > 0;
    applyFilter();
    drawBroker(snapshot);
    if (selected !== null) {
      renderDetailInfo();
      if (Date.now() - lastDetail >= DETAIL_REFRESH_MS) refreshDetail();
    }
  }

  function showFeedError(message) {
    const node = $("error");
    node.hidden = !message;
    text(node, message || "");
  }

  // ---------------------------------------------------------------- the queue view

  let selected = null;
  let offset = 0;
  let lastDetail = 0;
  let detailPending = false;

  const deadSuffix = ":dead";
  // "<q>:dead" holds the dead letters of <q>, "<q>:dead@<g>" those of its group <g>
  const DEAD_LETTERS = /^(.+):dead(?:@([A-Za-z0-9_.@-]{1,64}))?$/;
  function deadOf(queue) {
    const found = DEAD_LETTERS.exec(queue);
    return found ? {queue: found[1], group: found[2] || ""} : null;
  }
  const originOf = (queue) => {
    const dead = deadOf(queue);
    return dead ? dead.queue : null;
  };

  function route(event) {
    const queue = fragment().get("queue");
    if (queue) select(queue, event !== undefined);
    else unselect();
  }

  function unselect() {
    selected = null;
    $("detail").hidden = true;
    for (const row of $("queues").tBodies[0].rows) row.classList.remove("selected");
  }

  // ``moveFocus``: the operator asked for it (a link, a row), so the keyboard follows
  function select(queue, moveFocus) {
    const changed = queue !== selected;
    selected = queue;
    for (const row of $("queues").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.queue === queue);
    }
    $("detail").hidden = false;
    if (!changed) return;
    offset = 0;
    text($("detail-name"), queue);
    const origin = originOf(queue);
    $("detail-origin").hidden = origin === null;
    $("detail").classList.toggle("dead-letters", origin !== null);
    if (origin !== null) {
      const group = deadOf(queue).group;
      $("origin-link").href = queueLink(origin);
      text($("origin-link"), origin + (group ? " (group " + group + ")" : ""));
    }
    $("groups-part").hidden = true;
    $("groups").tBodies[0].replaceChildren();
    text($("messages-title"), origin !== null ? "Dead letters, oldest first" : "Next messages to be delivered");
    $("messages").tBodies[0].replaceChildren();
    $("consumers").tBodies[0].replaceChildren();
    text($("page-range"), "–");
    renderDetailInfo();
    refreshDetail();
    loadSettings(queue);
    $("d-dead-item").hidden = origin !== null;
    if (moveFocus) {
      $("detail-title").focus({preventScroll: true});
      $("detail").scrollIntoView({block: "start"});
    }
  }

  function renderDetailInfo() {
    const info = latest.get(selected) || {};
    text($("d-len"), info.len);
    text($("d-inflight"), info.inflight);
    text($("d-delayed"), info.delayed);
    text($("d-oldest"), age(info.oldest_age));
    text($("d-policy"), info.policy);
    text($("d-status"), info.status);
    const dead = $("d-dead");
    text(dead, info.dead);
    dead.href = queueLink(selected + deadSuffix);
    dead.setAttribute("aria-label", (info.dead === undefined ? "the" : info.dead) + " dead letters of " + selected);
    text($("act-status"), statusVerb(info.status));
    text($("act-policy"), policyVerb(info.policy));
    const series = perQueue.get(selected);
    drawRates($("queue-chart"), series || {published: blank(), delivered: blank()}, "queue");
  }

  async function refreshDetail() {
    if (detailPending || selected === null) return;
    detailPending = true;
    lastDetail = Date.now();
    const queue = selected;
    try {
      await Promise.all([loadMessages(queue), loadConsumers(queue), loadGroups(queue)]);
    } finally {
      detailPending = false;
    }
  }

  async function loadMessages(queue) {
    let view;
    try {
      view = await request("GET", "q/" + enc(queue) + "/messages", {query: {offset: offset, count: PAGE}});
    } catch (error) {
      if (queue === selected) text($("page-range"), "could not load: " + errorText(error));
      return;
    }
    if (queue !== selected || view.offset !== offset) return;
    if (offset > 0 && offset >= view.len) {
      // the page emptied under us (consumed, purged): go to the last one there is
      offset = Math.max(0, Math.floor((view.len - 1) / PAGE) * PAGE);
      return loadMessages(queue);
    }
    const now = lastSnapshot ? lastSnapshot.time * 1000 : Date.now();
    const rows = view.messages.map((message, i) => messageRow(queue, message, offset + i + 1, now));
    $("messages").tBodies[0].replaceChildren(...rows);
    $("messages-empty").hidden = view.messages.length > 0;
    text($("page-range"), view.len === 0 ? "0 of 0"
      : (offset + 1) + "–" + (offset + view.messages.length) + " of " + view.len);
    $("page-prev").disabled = offset === 0;
    $("page-next").disabled = offset + PAGE >= view.len;
  }

  function messageRow(queue, message, position, now) {
    const row = document.createElement("tr");
    row.dataset.key = message.key;
    const add = (name, value, numeric) => {
      const td = cell(row, name, numeric);
      text(td, value);
      return td;
    };
    add("position", position, true);
    add("key", message.key, false);
    const dead = message.dead || null;
    const reason = add("reason dead-only", dead ? dead.reason : null, false);
    if (dead && dead.at) reason.title = "dead since " + new Date(dead.at).toLocaleString();
    add("deliveries", dead && dead.deliveries !== undefined ? dead.deliveries : message.deliveries, true);
    add("origin dead-only", dead ? dead.from : null, false);
    add("waiting", message.enqueued ? age((now - message.enqueued) / 1000) : null, true);
    let body = message.gone ? "(expired: skipped when popped)" : message.value;
    if (message.truncated) body += "… (" + bytes(message.size) + ")";
    const value = add("value", body, false);
    value.classList.toggle("gone", message.gone);
    const actions = cell(row, "delete", false);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "danger small";
    button.textContent = "Delete";
    button.setAttribute("aria-label", "Delete " + message.key);
    button.addEventListener("click", () => {
      act($("detail-notices"), button, "Delete " + message.key,
        () => request("POST", "queue", {json: {cmd: "del", queue: queue, key: message.key}}),
        (answer) => answer.deleted ? "Deleted " + message.key + " from " + queue + "."
                                   : message.key + " was no longer in " + queue + ".")
        .then(() => refreshDetailSoon());
    });
    actions.appendChild(button);
    return row;
  }

  async function loadConsumers(queue) {
    let view;
    try {
      view = await request("GET", "q/" + enc(queue) + "/consumers");
    } catch (error) {
      if (queue === selected) text($("consumers-process"), "could not load: " + errorText(error));
      return;
    }
    if (queue !== selected) return;
    text($("consumers-process"), view.process);
    const now = lastSnapshot ? lastSnapshot.time : Date.now() / 1000;
    const rows = view.consumers.map((consumer) => {
      const row = document.createElement("tr");
      const add = (name, value, numeric) => text(cell(row, name, numeric), value);
      add("transport", consumer.transport + (consumer.acked ? " (acked)" : ""), false);
      add("group", consumer.group || null, false);
      add("remote", consumer.remote || "–", false);
      add("since", consumer.since ? clock(consumer.since) + " (" + age(now - consumer.since) + ")" : null, false);
      add("prefetch", consumer.acked ? consumer.unacked + " / " + consumer.prefetch : null, true);
      return row;
    });
    $("consumers").tBodies[0].replaceChildren(...rows);
    $("consumers-empty").hidden = rows.length > 0;
  }

  async function loadGroups(queue) {
    if (deadOf(queue)) {
      $("groups-part").hidden = true;
      return;
    }
    let view;
    try {
      view = await request("GET", "q/" + enc(queue) + "/groups");
    } catch (error) {
      return;   // an older broker without groups, or refused: the part stays hidden
    }
    if (queue !== selected) return;
    const rows = view.groups.map((group) => {
      const row = document.createElement("tr");
      row.dataset.group = group.name;
      const add = (name, value, numeric) => {
        const td = cell(row, name, numeric);
        text(td, value);
        return td;
      };
      add("name", group.name, false);
      add("depth", group.len, true);
      add("inflight", group.inflight, true);
      add("delayed", group.delayed, true);
      const dead = cell(row, "dead", true);
      const link = document.createElement("a");
      link.href = queueLink(queue + deadSuffix + "@" + group.name);
      link.textContent = String(group.dead);
      link.setAttribute("aria-label", group.dead + " dead letters of group " + group.name);
      dead.appendChild(link);
      dead.classList.toggle("nonzero", group.dead > 0);
      add("oldest", age(group.oldest_age), true);
      add("subscribers", subscribers(group.subscribers), false);
      return row;
    });
    $("groups").tBodies[0].replaceChildren(...rows);
    $("groups-part").hidden = rows.length === 0;
  }

  function refreshDetailSoon() {
    lastDetail = 0;
    refreshDetail();
  }

  // ---------------------------------------------------------------- settings

  let settingsFor = null;

  function clearSettingErrors() {
    for (const name of SETTINGS) {
      const error = $("e-" + name);
      error.hidden = true;
      error.textContent = "";
      $("s-" + name).removeAttribute("aria-invalid");
    }
    $("settings-error").hidden = true;
    text($("settings-error"), "");
  }

  function fillSettings(view) {
    settingsFor = view.queue;
    for (const name of SETTINGS) {
      const input = $("s-" + name);
      const own = view.set.includes(name);
      const effective = view.settings[name];
      input.value = own ? String(effective) : "";
      if (input.tagName === "SELECT") {
        input.options[0].textContent = own ? "default" : "default (" + effective + ")";
      } else {
        input.placeholder = own ? "default" : (effective === null ? "none" : String(effective));
      }
    }
  }

  async function loadSettings(queue) {
    clearSettingErrors();
    text($("settings-status"), "loading…");
    try {
      const view = await request("GET", "settings/" + enc(queue));
      if (queue !== selected) return;
      fillSettings(view);
      text($("settings-status"), "");
    } catch (error) {
      if (queue !== selected) return;
      text($("settings-status"), "");
      showSettingsError(error);
    }
  }

  function showSettingsError(error) {
    const message = errorText(error);
    const named = /setting '(\w+)'/.exec(error.message);
    if (named && SETTINGS.includes(named[1])) {
      const field = $("s-" + named[1]);
      const note = $("e-" + named[1]);
      note.textContent = error.message;
      note.hidden = false;
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
    const box = $("settings-error");
    box.textContent = "Not saved: " + message;
    box.hidden = false;
  }

  async function saveSettings(event) {
    event.preventDefault();
    const queue = selected;
    if (queue === null || settingsFor !== queue) return;
    const form = {};
    for (const name of SETTINGS) form[name] = $("s-" + name).value.trim();
    const button = $("settings-save");
    button.disabled = true;
    clearSettingErrors();
    text($("settings-status"), "saving…");
    try {
      const view = await request("POST", "settings/" + enc(queue), {form: form});
      if (queue === selected) fillSettings(view);
      text($("settings-status"), "saved " + new Date().toLocaleTimeString());
      const set = view.set.map((name) => name + " " + view.settings[name]);
      notify($("detail-notices"), "ok", "Saved the settings of " + queue + ": " +
             (set.length ? set.join(", ") : "all defaults") + ".");
    } catch (error) {
      text($("settings-status"), "");
      if (queue === selected) showSettingsError(error);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- actions of the queue view

  function purge() {
    const queue = selected;
    const info = latest.get(queue) || {};
    const parts = [(info.len || 0) + " waiting messages"];
    if (info.inflight) parts.push(info.inflight + " in flight");
    if (info.delayed) parts.push(info.delayed + " delayed");
    text($("purge-queue"), queue);
    text($("purge-text"), "This removes its " + parts.join(", ") + " for good and closes its streaming " +
         "consumers. Its settings, policy and dead letters stay.");
    const confirm = $("purge-confirm");
    text(confirm, "Purge " + queue);
    confirm.dataset.queue = queue;
    confirm.dataset.depth = String(info.len || 0);
    $("purge-dialog").showModal();
  }

  function confirmPurge() {
    const queue = $("purge-confirm").dataset.queue;
    $("purge-dialog").close();
    act($("detail-notices"), $("act-purge"), "Purge " + queue,
      () => request("DELETE", "q/" + enc(queue)),
      (body) => "Purged " + queue + ": " + body.purged + " messages removed.")
      .then(() => refreshDetailSoon());
    $("act-purge").focus();
  }

  function redrive() {
    const dead = deadOf(selected) || {queue: selected, group: ""};
    const queue = dead.queue;
    const whose = dead.group ? queue + " (group " + dead.group + ")" : queue;
    act($("detail-notices"), $("act-redrive"), "Redrive " + whose,
      () => request("POST", "q/" + enc(queue) + "/redrive", {form: dead.group ? {group: dead.group} : {}}),
      (body) => "Redrove " + body.moved + " dead letters of " + whose + " back to its end.")
      .then(() => refreshDetailSoon());
  }

  function publish(event) {
    event.preventDefault();
    const queue = selected;
    act($("detail-notices"), $("act-publish"), "Publish to " + queue,
      () => request("POST", "q/" + enc(queue), {form: {value: $("publish-value").value}}),
      (body) => "Published " + body.key + " to " + queue + ".")
      .then(() => refreshDetailSoon());
  }

  $("act-status").addEventListener("click", (event) => {
    const info = latest.get(selected) || {};
    setStatus(selected, info.status, $("detail-notices"), event.currentTarget);
  });
  $("act-policy").addEventListener("click", (event) => {
    const info = latest.get(selected) || {};
    setPolicy(selected, info.policy, $("detail-notices"), event.currentTarget);
  });
  $("act-redrive").addEventListener("click", redrive);
  $("act-purge").addEventListener("click", purge);
  $("purge-cancel").addEventListener("click", () => $("purge-dialog").close());
  $("purge-confirm").addEventListener("click", confirmPurge);
  $("publish-form").addEventListener("submit", publish);
  $("settings").addEventListener("submit", saveSettings);
  $("page-prev").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    refreshDetailSoon();
  });
  $("page-next").addEventListener("click", () => {
    offset += PAGE;
    refreshDetailSoon();
  });
  $("filter").addEventListener("input", applyFilter);
  window.addEventListener("hashchange", route);

  // ---------------------------------------------------------------- the live feed

  function setLive(live, refused) {
    const node = $("live");
    node.className = live ? "online" : "offline";
    // EventSource gives up for good on a refusal (401, 403): say so, not "reconnecting"
    text(node, live ? "live" : refused ? "offline: the broker refused the event stream (credentials?)"
                                       : "reconnecting…");
  }

  for (const svg of document.querySelectorAll("svg.chart")) svg.dataset.label = svg.getAttribute("aria-label");
  const events = new EventSource(api("dashboard/events", token ? {token: token} : null));
  events.addEventListener("stats", (event) => render(JSON.parse(event.data)));
  events.addEventListener("open", () => setLive(true));
  events.addEventListener("error", () => setLive(false, events.readyState === EventSource.CLOSED));
  route();
})();
