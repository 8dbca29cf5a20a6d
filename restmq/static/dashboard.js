// RestMQ dashboard: renders the `stats` snapshots of /dashboard/events (one a
// second, over the broker's own Server-Sent Events) and drives /p, /control and
// /j. Plain JavaScript, no build step. URLs are relative to the page, so it
// works behind a reverse proxy that adds a path prefix.
"use strict";

(function () {
  const HISTORY = 120;          // samples kept per queue for the chart (two minutes)
  const root = new URL("../", document.baseURI);
  const api = (path) => new URL(path, root).toString();
  const $ = (id) => document.getElementById(id);

  const depths = new Map();     // queue -> [depth, ...] newest last
  const previous = new Map();   // queue -> {time, published, delivered}
  let selected = null;
  let jobsPending = false;

  function text(node, value) {
    const shown = value === null || value === undefined ? "–" : String(value);
    if (node.textContent !== shown) node.textContent = shown;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function rate(queue, now, field, info) {
    const before = previous.get(queue);
    if (!before || info[field] === null || before[field] === null || now <= before.time) return null;
    return ((info[field] - before[field]) / (now - before.time)).toFixed(1);
  }

  function subscribers(counts) {
    const parts = Object.keys(counts || {}).sort().map((name) => name + " " + counts[name]);
    return parts.length ? parts.join(", ") : "0";
  }

  async function post(path, field, value) {
    const response = await fetch(api(path), {
      method: "POST",
      body: new URLSearchParams({[field]: value}),
      headers: {"Accept": "application/json"},
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    return body;
  }

  function toggle(button, path, field, value, apply) {
    button.disabled = true;
    post(path, field, value)
      .then(apply)
      .catch((error) => showError(error.message))
      .finally(() => { button.disabled = false; });
  }

  function cell(row, name, numeric) {
    const td = document.createElement("td");
    td.className = name + (numeric ? " num" : "");
    row.appendChild(td);
    return td;
  }

  function makeRow(queue) {
    const row = document.createElement("tr");
    row.dataset.queue = queue;
    for (const name of ["name", "depth", "inflight", "delayed", "dead", "oldest", "in", "out"]) {
      cell(row, name, name !== "name");
    }
    cell(row, "subscribers", false);
    const policy = cell(row, "policy", false);
    policy.appendChild(document.createElement("span"));
    const policyButton = document.createElement("button");
    policyButton.className = "policy-toggle";
    policyButton.type = "button";
    policy.appendChild(policyButton);
    const status = cell(row, "status", false);
    status.appendChild(document.createElement("span"));
    const statusButton = document.createElement("button");
    statusButton.className = "status-toggle";
    statusButton.type = "button";
    status.appendChild(statusButton);

    const path = (prefix) => prefix + "/" + encodeURIComponent(queue);
    policyButton.addEventListener("click", (event) => {
      event.stopPropagation();
      const next = row.dataset.policy === "broadcast" ? "roundrobin" : "broadcast";
      toggle(policyButton, path("p"), "policy", next, (body) => showPolicy(row, body.value));
    });
    statusButton.addEventListener("click", (event) => {
      event.stopPropagation();
      const next = row.dataset.status === "stopped" ? "start" : "stop";
      toggle(statusButton, path("control"), "status", next, (body) => showStatus(row, body.status));
    });
    row.addEventListener("click", () => select(queue));
    return row;
  }

  function showPolicy(row, policy) {
    row.dataset.policy = policy;
    text(row.querySelector("td.policy span"), policy);
    text(row.querySelector(".policy-toggle"), policy === "broadcast" ? "→ roundrobin" : "→ broadcast");
  }

  function showStatus(row, status) {
    row.dataset.status = status;
    row.classList.toggle("stopped", status === "stopped");
    text(row.querySelector("td.status span"), status);
    text(row.querySelector(".status-toggle"), status === "stopped" ? "resume" : "pause");
  }

  function renderRow(row, info, now) {
    const value = (name) => row.querySelector("td." + name);
    text(value("name"), info.name);
    text(value("depth"), info.len);
    text(value("inflight"), info.inflight);
    text(value("delayed"), info.delayed);
    text(value("dead"), info.dead);
    value("dead").classList.toggle("nonzero", info.dead > 0);
    text(value("oldest"), age(info.oldest_age));
    text(value("in"), rate(info.name, now, "published", info));
    text(value("out"), rate(info.name, now, "delivered", info));
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
    text($("updated"), "updated " + new Date(snapshot.time * 1000).toLocaleTimeString());
    if (snapshot.error) {
      showError("Redis: " + snapshot.error.message);
      return;
    }
    showError(null);
    text($("redis"), snapshot.redis);
    text($("queue-count"), snapshot.count);
    const body = $("queues").tBodies[0];
    const rows = new Map(Array.from(body.rows, (row) => [row.dataset.queue, row]));
    const seen = new Set();
    let next = body.firstElementChild;
    for (const info of snapshot.queues) {
      seen.add(info.name);
      const row = rows.get(info.name) || makeRow(info.name);
      // keep the rows in the snapshot's order (sorted by name), moving as little as possible
      if (row === next) next = next.nextElementSibling;
      else body.insertBefore(row, next);
      renderRow(row, info, snapshot.time);
      previous.set(info.name, {time: snapshot.time, published: info.published, delivered: info.delivered});
      const samples = depths.get(info.name) || [];
      samples.push(info.len);
      if (samples.length > HISTORY) samples.shift();
      depths.set(info.name, samples);
    }
    for (const [queue, row] of rows) {
      if (!seen.has(queue)) {
        row.remove();
        depths.delete(queue);
        previous.delete(queue);
      }
    }
    $("empty").hidden = snapshot.queues.length > 0;
    applyFilter();
    if (selected !== null) {
      drawChart(depths.get(selected) || []);
      loadJobs(selected);
    }
  }

  function drawChart(samples) {
    const max = Math.max(1, ...samples);
    const step = 600 / (HISTORY - 1);
    const offset = HISTORY - samples.length;
    const points = samples.map((depth, i) =>
      ((offset + i) * step).toFixed(1) + "," + (158 - (depth / max) * 150).toFixed(1));
    $("chart-line").setAttribute("points", points.join(" "));
    const area = points.length
      ? [((offset) * step).toFixed(1) + ",160"].concat(points, ["600,160"]) : [];
    $("chart-area").setAttribute("points", area.join(" "));
    text($("chart-max"), max);
  }

  async function loadJobs(queue) {
    if (jobsPending) return;
    jobsPending = true;
    try {
      const response = await fetch(api("j/" + encodeURIComponent(queue) + "?count=10"));
      if (!response.ok || queue !== selected) return;
      const view = await response.json();
      text($("jobs-len"), view.len);
      const list = $("jobs");
      list.replaceChildren(...view.jobs.map((job) => {
        const item = document.createElement("li");
        const key = document.createElement("span");
        key.className = "key";
        key.textContent = job.key;
        item.appendChild(key);
        item.appendChild(document.createTextNode(
          job.value.length > 300 ? job.value.slice(0, 300) + "…" : job.value));
        return item;
      }));
    } catch (error) {
      showError(error.message);
    } finally {
      jobsPending = false;
    }
  }

  function select(queue) {
    selected = queue;
    for (const row of $("queues").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.queue === queue);
    }
    $("detail").hidden = false;
    text($("detail-name"), queue);
    $("jobs").replaceChildren();
    drawChart(depths.get(queue) || []);
    loadJobs(queue);
  }

  function showError(message) {
    const node = $("error");
    node.hidden = !message;
    text(node, message || "");
  }

  function setLive(live) {
    const node = $("live");
    node.className = live ? "online" : "offline";
    text(node, live ? "live" : "reconnecting…");
  }

  $("filter").addEventListener("input", applyFilter);
  const events = new EventSource("events");
  events.addEventListener("stats", (event) => render(JSON.parse(event.data)));
  events.addEventListener("open", () => setLive(true));
  events.addEventListener("error", () => setLive(false));
})();
