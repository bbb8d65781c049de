// Edgeward's web console: fills the frame the hub rendered (cloudhub/console) from the REST
// API, and keeps it live from the watch API. Plain JavaScript, no build step, no library.
// Everything from the API is put in the page as text (textContent), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "edgeward.token";
  const NODE_RELIST_MS = 10000; // heartbeats and usage are leases: the watch does not carry them
  const RETRY_MS = [1000, 2000, 5000, 10000];
  const main = document.getElementById("page");
  const content = document.getElementById("content");
  const notice = document.getElementById("notice");

  // -- the page's elements -----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function say(text, kind) {
    notice.hidden = !text;
    notice.textContent = text || "";
    notice.className = "notice" + (kind ? " " + kind : "");
  }

  function dig(obj, ...path) {
    for (const key of path) {
      if (obj === null || typeof obj !== "object") return undefined;
      obj = obj[key];
    }
    return obj;
  }

  // -- talking to the hub ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, fallback) {
      let message = dig(body, "message") || fallback || `the hub answered ${status}`;
      const causes = dig(body, "details", "causes");
      if (Array.isArray(causes)) {
        const parts = causes
          .filter((c) => c && c.message)
          .map((c) => (c.field ? `${c.field}: ${c.message}` : c.message));
        if (parts.length) message += " — " + parts.join("; ");
      }
      super(message);
      this.status = status;
      this.reason = dig(body, "reason") || "";
    }
  }

  function headers(extra) {
    const out = { Accept: "application/json", ...(extra || {}) };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) out.Authorization = "Bearer " + token;
    return out;
  }

  function toLogin(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    const next = location.pathname + location.search;
    const query = new URLSearchParams({ next });
    if (why) query.set("why", why);
    location.assign("/ui/login?" + query.toString());
  }

  async function answer(resp) {
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, body, text.slice(0, 200));
    return body;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(), cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401 && main.dataset.page !== "login") {
      const err = await answer(resp).catch((e) => e);
      toLogin(err.message);
      throw err;
    }
    return answer(resp);
  }

  // A watch: each line of the stream is one event; an ERROR event (410: the hub's change
  // log moved past us) ends it like a lost connection, and the caller lists again.
  async function watch(path, resourceVersion, onEvent, signal) {
    const query = new URLSearchParams({ watch: "1" });
    if (resourceVersion) query.set("resourceVersion", resourceVersion);
    const resp = await fetch(path + (path.includes("?") ? "&" : "?") + query, {
      headers: headers(),
      cache: "no-store",
      signal,
    });
    if (resp.status === 401) {
      toLogin();
      return;
    }
    if (!resp.ok) await answer(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, end).trim();
        buffered = buffered.slice(end + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.type === "ERROR") throw new ApiError(dig(event, "object", "code"), event.object);
        onEvent(event);
      }
    }
  }

  function keyOf(obj) {
    const ns = dig(obj, "metadata", "namespace");
    const name = dig(obj, "metadata", "name");
    return ns ? `${ns}/${name}` : name;
  }

  // A list kept live: listed, then watched from the list's revision; listed again after a
  // lost stream (with a growing pause) and every relistMs when the watch cannot say all.
  class LiveList {
    constructor(path, onChange, options) {
      this.path = path;
      this.onChange = onChange;
      this.relistMs = (options && options.relistMs) || 0;
      this.merge = (options && options.merge) || ((old, obj) => obj);
      this.single = Boolean(options && options.single); // path is one object, not a list
      this.items = new Map();
      this.failures = 0;
      this.live = false;
    }

    start() {
      this.loop();
      if (this.relistMs) setInterval(() => this.relist().catch(() => {}), this.relistMs);
    }

    async relist() {
      const list = await api("GET", this.path);
      const fresh = new Map();
      const items = this.single ? [list] : list.items || [];
      for (const obj of items) fresh.set(keyOf(obj), this.merge(this.items.get(keyOf(obj)), obj));
      this.items = fresh;
      this.onChange();
      return dig(list, "metadata", "resourceVersion");
    }

    apply(event) {
      const key = keyOf(event.object);
      if (event.type === "DELETED") this.items.delete(key);
      else this.items.set(key, this.merge(this.items.get(key), event.object));
      this.onChange();
    }

    async loop() {
      for (;;) {
        try {
          const revision = await this.relist();
          this.live = true;
          this.failures = 0;
          showLive();
          await watch(this.path, revision, (event) => this.apply(event), leaving.signal);
        } catch (err) {
          if (leaving.signal.aborted) return;
          if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
            this.live = false;
            showLive(err.message);
            return;
          }
        }
        this.live = false;
        showLive();
        const pause = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
        this.failures += 1;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  const streams = [];
  // A page that is left closes its watches at once: a browser keeps at most six
  // connections to the hub, and a watch it has not closed would hold one of them.
  const leaving = new AbortController();
  window.addEventListener("pagehide", () => leaving.abort());

  function showLive(error) {
    if (error) {
      say(error, "error");
      return;
    }
    const down = streams.some((s) => !s.live);
    if (down) say("Connection to the hub lost: reconnecting…", "warn");
    else if (notice.classList.contains("warn")) say("");
    main.dataset.live = down ? "no" : "yes";
  }

  function live(path, onChange, options) {
    const stream = new LiveList(path, onChange, options);
    streams.push(stream);
    stream.start();
    return stream;
  }

  // Re-render at most once per frame, and every second so ages stay true.
  function renderer(render) {
    let queued = false;
    const run = () => {
      queued = false;
      render();
    };
    const schedule = () => {
      if (!queued) {
        queued = true;
        requestAnimationFrame(run);
      }
    };
    setInterval(schedule, 1000);
    return schedule;
  }

  // -- what the CLI shows, for the page ----------------------------------------------------

  function parseTime(value) {
    if (typeof value !== "string" || !value) return null;
    const t = Date.parse(value);
    return Number.isNaN(t) ? null : t;
  }

  function millis(value) {
    const n = Number(value);
    return value !== undefined && value !== null && value !== "" && Number.isFinite(n) ? n : null;
  }

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? (s % 60) + "s" : ""}`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
  }

  function ago(t) {
    return t === null ? "–" : `${duration(Date.now() - t)} ago`;
  }

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "Ki", "Mi", "Gi", "Ti"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n}B` : `${n.toFixed(1)}${units[i]}`;
  }

  function readyCondition(node) {
    const conditions = dig(node, "status", "conditions");
    if (!Array.isArray(conditions) || !conditions.length) return null;
    return conditions.find((c) => c && c.type === "Ready") || null;
  }

  function nodeStatus(node) {
    const cond = readyCondition(node);
    if (cond === null) return "Unknown";
    return cond.status === "True" ? "Ready" : "NotReady";
  }

  function usage(node, field) {
    const used = dig(node, "status", "usage", field);
    const total = dig(node, "status", "capacity", field);
    if (used === undefined && total === undefined) return "–";
    return `${bytes(used)} / ${bytes(total)}`;
  }

  function cpu(node) {
    const percent = dig(node, "status", "usage", "cpuPercent");
    const cores = dig(node, "status", "capacity", "cpu");
    if (typeof percent !== "number") return "–";
    return `${percent.toFixed(0)}%` + (cores !== undefined ? ` of ${cores}` : "");
  }

  // Synced or Drift as the hub last judged the node's cache (after its first check).
  function cacheState(node) {
    const state = dig(node, "status", "cache", "state");
    return state ? badge(state) : "not checked yet";
  }

  function lastOutage(node) {
    const outages = dig(node, "status", "outages");
    if (!Array.isArray(outages) || !outages.length) return "none";
    const last = outages[0];
    const lasted = typeof last.durationSeconds === "number" ? duration(last.durationSeconds * 1000) : "?";
    return `${lasted}, ended ${ago(parseTime(last.end))}`;
  }

  // The heartbeat and usage a watch event lacks are kept from the last listing.
  function keepLease(old, obj) {
    if (!old || !obj.status || dig(obj, "status", "usage")) return obj;
    const status = { ...obj.status };
    for (const field of ["usage", "lastHeartbeatTime"]) {
      if (old.status && old.status[field] !== undefined) status[field] = old.status[field];
    }
    return { ...obj, status };
  }

  function twinState(device) {
    const state = new Map();
    const entry = (name) => {
      if (!state.has(name)) state.set(name, { desired: null, reported: null, observed: null, at: null, conflict: null });
      return state.get(name);
    };
    for (const prop of dig(device, "spec", "properties") || []) {
      if (prop && typeof prop.name === "string") entry(prop.name).desired = dig(prop, "desired", "value") ?? null;
    }
    for (const twin of dig(device, "status", "twins") || []) {
      if (!twin || typeof twin.propertyName !== "string") continue;
      const e = entry(twin.propertyName);
      e.reported = dig(twin, "reported", "value") ?? null;
      e.observed = dig(twin, "observedDesired", "value") ?? null;
      e.at = millis(dig(twin, "reported", "metadata", "timestamp"));
      e.conflict = dig(twin, "conflict", "supersededLocalValue") ?? null;
    }
    return state;
  }

  // yes, pending (the edge has not got the desired value), no (the device reports another).
  function synced(s) {
    if (s.desired === null) return "–";
    if (s.observed !== s.desired) return "pending";
    return s.reported === s.desired ? "yes" : "no";
  }

  function deviceSynced(device) {
    const wanted = [...twinState(device).values()].filter((s) => s.desired !== null);
    if (!wanted.length) return "–";
    if (wanted.some((s) => synced(s) === "pending")) return "pending";
    return wanted.some((s) => synced(s) === "no") ? "no" : "yes";
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function badge(text) {
    return el("span", { class: "badge b-" + String(text).toLowerCase(), text });
  }

  function link(href, text) {
    return el("a", { href, text });
  }

  function deviceHref(device) {
    const ns = encodeURIComponent(dig(device, "metadata", "namespace") || "default");
    return `/ui/devices/${ns}/${encodeURIComponent(dig(device, "metadata", "name"))}`;
  }

  // -- tables that update in place ----------------------------------------------------------
  // Rows are keyed, cells updated only when their text changes: a row being read or an input
  // being typed in is never rebuilt under the operator.

  class Table {
    constructor(columns, empty) {
      this.columns = columns;
      this.rows = new Map();
      this.body = el("tbody");
      this.emptyRow = el("tr", { class: "empty" }, el("td", { colspan: columns.length, text: empty }));
      this.element = el(
        "div",
        { class: "scroll" },
        el("table", {}, el("thead", {}, el("tr", {}, columns.map((c) => el("th", { text: c.title })))), this.body),
      );
    }

    update(items) {
      const seen = new Set();
      let i = 0;
      for (const [key, item] of items) {
        seen.add(key);
        let row = this.rows.get(key);
        if (!row) {
          row = el("tr", { "data-key": key });
          for (const column of this.columns) {
            const td = el("td", { class: "col-" + column.name, "data-label": column.title });
            if (column.create) td.append(column.create(item, key));
            row.append(td);
          }
          this.rows.set(key, row);
        }
        this.columns.forEach((column, c) => {
          if (column.create) return;
          const td = row.children[c];
          const value = column.cell(item, key);
          const sig = value instanceof Node ? value.outerHTML : String(value);
          if (td.dataset.sig !== sig) {
            td.dataset.sig = sig;
            td.replaceChildren(value instanceof Node ? value : String(value));
          }
        });
        if (this.body.children[i] !== row) this.body.insertBefore(row, this.body.children[i] || null);
        i += 1;
      }
      for (const [key, row] of this.rows) {
        if (!seen.has(key)) {
          row.remove();
          this.rows.delete(key);
        }
      }
      if (i === 0) this.body.replaceChildren(this.emptyRow);
      else this.emptyRow.remove();
    }
  }

  function sorted(map) {
    return [...map.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  function section(title, ...children) {
    return el("section", {}, el("h2", { text: title }), ...children);
  }

  // -- pages ----------------------------------------------------------------------------------

  function loginPage() {
    document.getElementById("logout").hidden = true;
    const params = new URLSearchParams(location.search);
    const next = params.get("next");
    const target = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
    if (params.get("why")) say(params.get("why"), "error");
    const input = el("input", {
      id: "token",
      type: "password",
      name: "token",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      placeholder: "the token from 'edgeward token create --role viewer'",
    });
    const form = el(
      "form",
      { class: "login", id: "login" },
      el("label", { for: "token", text: "Token" }),
      input,
      el("button", { type: "submit", text: "Log in" }),
      el("p", {
        class: "muted",
        text:
          "The token stays in this browser tab's session storage and is sent only to this hub. " +
          "A viewer token shows the fleet; an admin token may also set desired values.",
      }),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      say("Checking the token…");
      try {
        const resp = await fetch("/api/v1/nodes", {
          headers: { Accept: "application/json", Authorization: "Bearer " + token },
          cache: "no-store",
        });
        await answer(resp);
        sessionStorage.setItem(TOKEN_KEY, token);
        location.assign(target);
      } catch (err) {
        say(
          err.status === 403
            ? `${err.message}. The console needs a viewer or an admin token.`
            : err.message,
          "error",
        );
      }
    });
    content.replaceChildren(form);
    input.focus();
  }

  function fleetPage() {
    const summary = el("p", { class: "summary", id: "summary" });
    const nodes = new Table(
      [
        { name: "name", title: "Node", cell: (n) => link(`/ui/nodes/${encodeURIComponent(n.metadata.name)}`, n.metadata.name) },
        { name: "status", title: "Status", cell: (n) => badge(nodeStatus(n)) },
        { name: "since", title: "Since", cell: (n) => ago(parseTime(dig(readyCondition(n), "lastTransitionTime"))) },
        { name: "heartbeat", title: "Last heartbeat", cell: (n) => ago(parseTime(dig(n, "status", "lastHeartbeatTime"))) },
        { name: "cpu", title: "CPU", cell: cpu },
        { name: "memory", title: "Memory", cell: (n) => usage(n, "memoryBytes") },
        { name: "disk", title: "Disk", cell: (n) => usage(n, "diskBytes") },
        { name: "outage", title: "Last outage", cell: lastOutage },
        { name: "cache", title: "Cache", cell: (n) => cacheState(n) },
        { name: "devices", title: "Devices", cell: (n, key) => devicesOf(key) },
      ],
      "No nodes yet: join one with 'edgeward join'.",
    );
    content.replaceChildren(summary, section("Nodes", nodes.element));
    let nodeList = null;
    let deviceList = null;

    // devices per node, counted once per render (not once per row)
    let perNode = new Map();
    function devicesOf(node) {
      if (!deviceList || !deviceList.live) return "…";
      const counts = perNode.get(node) || { all: 0, behind: 0 };
      return counts.behind ? `${counts.all} (${counts.behind} out of sync)` : String(counts.all);
    }

    const render = renderer(() => {
      const all = [...nodeList.items.values()];
      const ready = all.filter((n) => nodeStatus(n) === "Ready").length;
      const devices = deviceList ? [...deviceList.items.values()] : [];
      perNode = new Map();
      let behind = 0;
      for (const d of devices) {
        const counts = perNode.get(dig(d, "spec", "nodeName")) || { all: 0, behind: 0 };
        const late = ["pending", "no"].includes(deviceSynced(d));
        counts.all += 1;
        counts.behind += late ? 1 : 0;
        behind += late ? 1 : 0;
        perNode.set(dig(d, "spec", "nodeName"), counts);
      }
      summary.textContent =
        `${plural(all.length, "node")}: ${ready} Ready, ${all.length - ready} NotReady · ` +
        `${plural(devices.length, "device")}, ${behind} out of sync`;
      nodes.update(sorted(nodeList.items));
    });
    nodeList = live("/api/v1/nodes", render, { relistMs: NODE_RELIST_MS, merge: keepLease });
    deviceList = live("/api/v1/devices", render);
  }

  function nodePage() {
    const name = main.dataset.name;
    const facts = el("dl", { class: "facts" });
    const conditions = new Table(
      [
        { name: "type", title: "Condition", cell: (c) => c.type || "–" },
        { name: "status", title: "Status", cell: (c) => badge(c.status === "True" ? "Ready" : c.status === "Unknown" ? "Unknown" : "NotReady") },
        { name: "reason", title: "Reason", cell: (c) => c.reason || "–" },
        { name: "message", title: "Message", cell: (c) => c.message || "–" },
        { name: "since", title: "Since", cell: (c) => ago(parseTime(c.lastTransitionTime)) },
      ],
      "No conditions: the node never reported.",
    );
    const outages = new Table(
      [
        { name: "start", title: "Went offline", cell: (o) => o.start || "–" },
        { name: "lasted", title: "Offline for", cell: (o) => (typeof o.durationSeconds === "number" ? duration(o.durationSeconds * 1000) : "?") },
        { name: "restarts", title: "Restarts", cell: (o) => o.restarts ?? 0 },
        { name: "buffered", title: "Reports buffered", cell: (o) => o.buffered ?? 0 },
        { name: "dropped", title: "Dropped", cell: (o) => (o.dropped || 0) + (o.expired || 0) },
      ],
      "No outages reported.",
    );
    const seen = el("ol", { class: "log", id: "transitions" });
    const devices = new Table(
      [
        { name: "name", title: "Device", cell: (d) => link(deviceHref(d), keyOf(d)) },
        { name: "model", title: "Model", cell: (d) => dig(d, "spec", "deviceModelRef", "name") || "–" },
        { name: "state", title: "State", cell: (d) => dig(d, "status", "state") || "–" },
        { name: "synced", title: "Synced", cell: (d) => badge(deviceSynced(d)) },
      ],
      "No devices bound to this node.",
    );
    content.replaceChildren(
      facts,
      section("Conditions", conditions.element),
      section("Outages", outages.element),
      section("Status changes seen on this page", seen),
      section("Devices", devices.element),
    );
    let lastStatus = null;
    let nodeList = null;
    let deviceList = null;
    const render = renderer(() => {
      const node = nodeList.items.get(name);
      if (!node) {
        facts.replaceChildren(el("p", { class: "muted", text: nodeList.live ? "No such node." : "Loading…" }));
        return;
      }
      const status = nodeStatus(node);
      if (status !== lastStatus) {
        seen.prepend(el("li", { text: `${new Date().toLocaleTimeString()} ${status}` }));
        lastStatus = status;
      }
      const info = dig(node, "status", "nodeInfo") || {};
      const rows = [
        ["Status", badge(status)],
        ["Last heartbeat", ago(parseTime(dig(node, "status", "lastHeartbeatTime")))],
        ["CPU", cpu(node)],
        ["Memory", usage(node, "memoryBytes")],
        ["Disk", usage(node, "diskBytes")],
        ["Cache", cacheState(node)],
        ["Outbox", `${dig(node, "status", "usage", "outboxRows") ?? "–"} reports waiting (${bytes(dig(node, "status", "usage", "outboxBytes"))})`],
        ["Agent", `${info.agentVersion || "–"} on ${info.os || "?"} ${info.architecture || ""}`],
        ["Hostname", info.hostname || "–"],
      ];
      facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k }, v)]));
      conditions.update((dig(node, "status", "conditions") || []).map((c) => [c.type, c]));
      outages.update((dig(node, "status", "outages") || []).map((o) => [o.start, o]));
      const mine = new Map([...deviceList.items].filter(([, d]) => dig(d, "spec", "nodeName") === name));
      devices.update(sorted(mine));
    });
    nodeList = live(`/api/v1/nodes/${encodeURIComponent(name)}`, render, {
      relistMs: NODE_RELIST_MS,
      merge: keepLease,
      single: true,
    });
    deviceList = live("/api/v1/devices", render);
  }

  function devicesPage() {
    const table = new Table(
      [
        { name: "device", title: "Device", cell: (r) => link(deviceHref(r.device), keyOf(r.device)) },
        { name: "node", title: "Node", cell: (r) => dig(r.device, "spec", "nodeName") || "–" },
        { name: "property", title: "Property", cell: (r) => r.property },
        { name: "desired", title: "Desired", cell: (r) => r.s.desired ?? "–" },
        { name: "reported", title: "Reported", cell: (r) => r.s.reported ?? "–" },
        { name: "synced", title: "Synced", cell: (r) => badge(synced(r.s)) },
        { name: "conflict", title: "Conflict", cell: (r) => (r.s.conflict === null ? "–" : `local ${r.s.conflict} superseded`) },
        { name: "updated", title: "Reported at", cell: (r) => ago(r.s.at) },
      ],
      "No devices yet: apply one with 'edgeward apply -f'.",
    );
    const only = el("input", { type: "checkbox", id: "only-unsynced" });
    content.replaceChildren(
      el("label", { class: "filter" }, only, " only properties out of sync"),
      table.element,
    );
    const render = renderer(() => {
      const rows = [];
      for (const [key, device] of sorted(list.items)) {
        for (const [property, s] of twinState(device)) {
          if (only.checked && !["pending", "no"].includes(synced(s))) continue;
          rows.push([`${key}#${property}`, { device, property, s }]);
        }
      }
      table.update(rows);
    });
    only.addEventListener("change", render);
    const list = live("/api/v1/devices", render);
  }

  // -- the device page: twins, setting a desired value, history ---------------------------

  const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

  function modelProperties(model) {
    const out = new Map();
    for (const p of dig(model, "spec", "properties") || []) if (p && p.name) out.set(p.name, p);
    return out;
  }

  // The checks the hub makes too (cloudhub/admission.py): said here before sending.
  function checkValue(prop, value) {
    if (!prop) return null;
    const type = String(prop.type || "").toUpperCase();
    if (prop.accessMode === "ReadOnly") return `${prop.name} is read-only: the device sets it`;
    if (type === "INT" && !/^[+-]?[0-9]+$/.test(value)) return `${prop.name} is INT: give a whole number`;
    if ((type === "FLOAT" || type === "DOUBLE") && !Number.isFinite(Number(value))) return `${prop.name} is ${type}: give a number`;
    if (type === "BOOLEAN" && value !== "true" && value !== "false") return `${prop.name} is BOOLEAN: give true or false`;
    if (["INT", "FLOAT", "DOUBLE"].includes(type)) {
      const n = Number(value);
      if (prop.minimum !== undefined && prop.minimum !== "" && n < Number(prop.minimum)) return `${prop.name} must be at least ${prop.minimum}`;
      if (prop.maximum !== undefined && prop.maximum !== "" && n > Number(prop.maximum)) return `${prop.name} must be at most ${prop.maximum}`;
    }
    return null;
  }

  function withDesired(device, property, value) {
    const body = { ...device };
    delete body.status;
    const spec = { ...(body.spec || {}) };
    const props = (spec.properties || []).map((p) => ({ ...p }));
    const desired = { value, metadata: { timestamp: String(Date.now()) } };
    const entry = props.find((p) => p.name === property);
    if (entry) {
      const previous = entry.desired || {};
      entry.desired = { ...previous, ...desired, metadata: { ...(previous.metadata || {}), ...desired.metadata } };
    } else props.push({ name: property, desired });
    spec.properties = props;
    body.spec = spec;
    return body;
  }

  async function setDesired(path, property, value) {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const current = await api("GET", path);
      try {
        return await api("PUT", path, withDesired(current, property, value));
      } catch (err) {
        if (err.status !== 409 || err.reason !== "Conflict") throw err;
      }
    }
    throw new Error("the device kept changing; try again");
  }

  function chart(points, range) {
    const W = 640;
    const H = 180;
    const pad = { l: 48, r: 12, t: 10, b: 24 };
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    const now = Date.now();
    // the selected range, or less when the values are younger: they fill the width
    const oldest = points.length > 1 ? points[0].t : -Infinity;
    const from = Math.max(now - range * 1000, Math.min(oldest, now - 60000));
    const values = points.filter((p) => p.t >= from).map((p) => p.v);
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (!values.length) {
      lo = 0;
      hi = 1;
    }
    if (lo === hi) {
      lo -= 1;
      hi += 1;
    }
    const x = (t) => pad.l + ((t - from) / (now - from)) * (W - pad.l - pad.r);
    const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (H - pad.t - pad.b);
    svg.append(svgEl("rect", { x: pad.l, y: pad.t, width: W - pad.l - pad.r, height: H - pad.t - pad.b, class: "plot" }));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      svg.append(svgEl("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: "grid" }));
      const label = svgEl("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
      label.textContent = Number(v.toPrecision(4)).toString();
      svg.append(label);
    }
    for (const [t, anchor] of [[from, "start"], [now, "end"]]) {
      const label = svgEl("text", { x: x(t), y: H - 6, class: "axis", "text-anchor": anchor });
      const clock = now - from < 3600000 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
      label.textContent = (now - from > 86400000 ? new Date(t).toLocaleDateString() + " " : "") + new Date(t).toLocaleTimeString([], clock);
      svg.append(label);
    }
    const shown = points.filter((p) => p.t >= from);
    if (shown.length) {
      // a step line: a value holds until the next one is reported
      let d = "";
      shown.forEach((p, i) => {
        d += i === 0 ? `M${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}` : `H${x(p.t).toFixed(1)}V${y(p.v).toFixed(1)}`;
      });
      d += `H${x(now).toFixed(1)}`;
      svg.append(svgEl("path", { d, class: "line" }));
      const last = shown[shown.length - 1];
      svg.append(svgEl("circle", { cx: x(last.t), cy: y(last.v), r: 3.5, class: "dot" }));
    }
    return svg;
  }

  function devicePage() {
    const ns = main.dataset.namespace;
    const name = main.dataset.name;
    const path = `/api/v1/namespaces/${encodeURIComponent(ns)}/devices/${encodeURIComponent(name)}`;
    const facts = el("dl", { class: "facts" });
    const feedback = new Map(); // property -> its form's message element
    let model = null;
    let device = null;
    let props = new Map();
    const pending = new Map(); // property -> {value, sent}

    function form(s, property) {
      const input = el("input", { name: "value", "aria-label": `desired ${property}`, size: 8, autocomplete: "off" });
      const message = el("span", { class: "form-message", role: "status" });
      feedback.set(property, message);
      const f = el("form", { class: "set", "data-property": property }, input, el("button", { type: "submit", text: "Set" }), message);
      f.addEventListener("submit", async (event) => {
        event.preventDefault();
        const value = input.value.trim();
        const problem = checkValue(props.get(property), value);
        message.className = "form-message";
        if (problem) {
          message.textContent = problem;
          message.classList.add("error");
          return;
        }
        message.textContent = "Sending…";
        try {
          await setDesired(path, property, value);
          pending.set(property, { value, sent: Date.now() });
          message.textContent = `Sent ${property}=${value}; waiting for the edge…`;
          input.value = "";
        } catch (err) {
          message.textContent = err.message;
          message.classList.add("error");
        }
      });
      return f;
    }

    const twins = new Table(
      [
        { name: "property", title: "Property", cell: (s, p) => p },
        { name: "desired", title: "Desired", cell: (s) => s.desired ?? "–" },
        { name: "reported", title: "Reported", cell: (s) => s.reported ?? "–" },
        { name: "observed", title: "Edge has", cell: (s) => s.observed ?? "–" },
        { name: "synced", title: "Synced", cell: (s) => badge(synced(s)) },
        { name: "conflict", title: "Conflict", cell: (s) => (s.conflict === null ? "–" : `local ${s.conflict} superseded`) },
        { name: "updated", title: "Reported at", cell: (s) => ago(s.at) },
        { name: "set", title: "Set desired", create: (s, p) => form(s, p) },
      ],
      "No properties.",
    );
    const rangeSelect = el("select", { id: "range", "aria-label": "history range" }, Object.keys(RANGES).map((r) => el("option", { value: r, text: `last ${r}`, selected: r === "1h" })));
    const charts = el("div", { class: "charts", id: "history" });
    content.replaceChildren(
      facts,
      section("Twins", twins.element),
      section("History", el("p", {}, rangeSelect), charts),
    );

    // history: property -> [{t, v(number) or s(text)}], fetched per range and appended live
    const history = new Map();
    async function loadHistory() {
      const range = RANGES[rangeSelect.value];
      const since = ((Date.now() / 1000) - range).toFixed(3);
      for (const property of twinState(device).keys()) {
        const query = new URLSearchParams({ property, since, limit: "10000" });
        try {
          const answer = await api("GET", `${path}/history?${query}`);
          history.set(property, (answer.items || []).map((i) => ({ t: parseTime(i.time), text: i.value })));
        } catch (err) {
          history.set(property, []);
          say(err.message, "error");
        }
      }
      drawCharts();
    }

    function isNumeric(property, points) {
      const type = String(dig(props.get(property), "type") || "").toUpperCase();
      if (["INT", "FLOAT", "DOUBLE"].includes(type)) return true;
      if (type) return false;
      return points.length > 0 && points.every((p) => p.text !== "" && Number.isFinite(Number(p.text)));
    }

    function drawCharts() {
      const range = RANGES[rangeSelect.value];
      const blocks = [];
      for (const [property, points] of history) {
        const numeric = isNumeric(property, points);
        const unit = dig(props.get(property), "unit");
        const title = el("h3", { text: property + (unit ? ` (${unit})` : "") });
        const last = points.length ? points[points.length - 1].text : "";
        let body;
        if (!points.length) body = el("p", { class: "muted", text: "No values reported in this range." });
        else if (numeric) {
          body = chart(points.map((p) => ({ t: p.t, v: Number(p.text) })).filter((p) => Number.isFinite(p.v)), range);
        } else {
          body = el(
            "div",
            { class: "scroll" },
            el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Time" }), el("th", { text: "Value" }))),
              el("tbody", {}, points.slice(-50).reverse().map((p) => el("tr", {}, el("td", { text: new Date(p.t).toLocaleString() }), el("td", { text: p.text }))))),
          );
        }
        blocks.push(el("figure", { class: "history", "data-property": property, "data-last": last, "data-count": points.length }, title, body));
      }
      charts.replaceChildren(...blocks);
    }

    function appendLive(previous) {
      let grew = false;
      for (const [property, s] of twinState(device)) {
        const before = previous && previous.get(property);
        if (s.at === null || s.reported === null) continue;
        if (before && before.at === s.at && before.reported === s.reported) continue;
        const points = history.get(property) || [];
        if (!points.length || points[points.length - 1].t < s.at) {
          points.push({ t: s.at, text: s.reported });
          history.set(property, points);
          grew = true;
        }
      }
      if (grew) drawCharts();
    }

    let previousState = null;
    let historyLoaded = false;
    const render = renderer(() => {
      device = list.items.get(`${ns}/${name}`) || null;
      if (!device) {
        facts.replaceChildren(el("p", { class: "muted", text: list.live ? "No such device." : "Loading…" }));
        return;
      }
      const modelName = dig(device, "spec", "deviceModelRef", "name");
      if (modelName && (!model || model.metadata.name !== modelName)) {
        model = { metadata: { name: modelName } };
        api("GET", `/api/v1/namespaces/${encodeURIComponent(ns)}/devicemodels/${encodeURIComponent(modelName)}`)
          .then((m) => {
            model = m;
            props = modelProperties(m);
            render();
            drawCharts();
          })
          .catch(() => {});
      }
      const node = dig(device, "spec", "nodeName");
      facts.replaceChildren(
        el("dt", { text: "Node" }), el("dd", {}, node ? link(`/ui/nodes/${encodeURIComponent(node)}`, node) : "–"),
        el("dt", { text: "Model" }), el("dd", { text: modelName || "–" }),
        el("dt", { text: "State" }), el("dd", { text: dig(device, "status", "state") || "–" }),
        el("dt", { text: "Synced" }), el("dd", {}, badge(deviceSynced(device))),
        el("dt", { text: "Last changed by" }), el("dd", { text: dig(device, "metadata", "annotations", "edgeward.io/last-changed-by") || "–" }),
      );
      const state = twinState(device);
      twins.update([...state.entries()]);
      for (const f of twins.body.querySelectorAll("form.set")) {
        const readOnly = dig(props.get(f.dataset.property), "accessMode") === "ReadOnly";
        f.elements.value.disabled = readOnly;
        f.elements.value.placeholder = readOnly ? "read-only" : "";
        f.querySelector("button").disabled = readOnly;
      }
      for (const [property, want] of pending) {
        const s = state.get(property);
        const message = feedback.get(property);
        if (!s || !message) continue;
        const took = duration(Date.now() - want.sent);
        if (s.desired !== want.value) {
          pending.delete(property);
        } else if (s.reported === want.value) {
          message.textContent = `The device reports ${property}=${want.value} (${took} after it was set).`;
          pending.delete(property);
        } else if (s.observed === want.value) {
          message.textContent = `The edge has ${property}=${want.value}; waiting for the device…`;
        }
      }
      if (!historyLoaded) {
        historyLoaded = true;
        loadHistory();
      } else if (previousState) appendLive(previousState);
      previousState = state;
    });
    rangeSelect.addEventListener("change", loadHistory);
    const list = live(path, render, { single: true });
  }

  function missingPage() {
    content.replaceChildren(el("p", {}, "No such page. ", link("/", "See the fleet.")));
  }

  // -- start ------------------------------------------------------------------------------

  const logout = document.getElementById("logout");
  if (sessionStorage.getItem(TOKEN_KEY)) {
    logout.hidden = false;
    logout.addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.assign("/ui/login");
    });
  }
  const current = { fleet: "fleet", node: "fleet", devices: "devices", device: "devices" }[main.dataset.page];
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === current) a.setAttribute("aria-current", "page");
  }
  const pages = { login: loginPage, fleet: fleetPage, node: nodePage, devices: devicesPage, device: devicePage, missing: missingPage };
  (pages[main.dataset.page] || missingPage)();
})();
