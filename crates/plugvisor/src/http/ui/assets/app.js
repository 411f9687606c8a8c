// plugvisor's status page: the table follows the server-sent events, one
// row at a time; nothing is polled. Every change carries the run's token,
// which this page read from its own HTML.
"use strict";

const TOKEN = document.querySelector('meta[name="plugvisor-token"]').content;
const MAX_EVENTS = 200;

// Always shown, in this order.
const COLUMNS = [
  ["id", "ID"], ["version", "Version"], ["runtime", "Runtime"], ["state", "State"],
  ["pid", "PID"], ["uptime", "Uptime"], ["restarts", "Restarts"],
  ["last_error", "Last error"], ["note", "Note"],
];
// Shown once any status carries them (features a host may not have).
const OPTIONAL = [["transport", "Transport"], ["sandbox", "Sandbox"], ["limits", "Limits"], ["attached", "Attached"]];

const ACTIONS = [["start", "Start"], ["stop", "Stop"], ["restart", "Restart"], ["settings", "Settings"]];

// The rows are kept in groups of GROUP to a <tbody>: the browser skips a
// group that is off screen (content-visibility in style.css), so a thousand
// rows cost about what the screenful costs. One group per row would leave
// the browser a thousand boxes to style, lay out and watch each frame.
const GROUP = 25;

const table = document.querySelector("#plugins");
const rows = new Map(); // id -> {tr, cells, buttons, status}
let shown = COLUMNS.slice();
let rowTemplate = null; // an empty row of the shown columns, for newRow to clone
let selected = null; // the id whose settings are open

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function notice(text) {
  const p = document.querySelector("#notice");
  p.textContent = text || "";
  p.hidden = !text;
}

// --- the table ---------------------------------------------------------------

// The rows are styled as flex boxes (style.css), so the table's roles are
// given as attributes.
function drawHeader() {
  const tr = table.tHead.rows[0];
  tr.replaceChildren(...shown.map(([key, label]) => el("th", { "data-col": key, role: "columnheader", text: label })),
    el("th", { class: "actions", role: "columnheader", "aria-label": "Actions" }));
  rowTemplate = el("tr", { role: "row" }, ...shown.map(([key]) => el("td", { "data-col": key, role: "cell" })),
    el("td", { class: "actions", role: "cell" }, ...ACTIONS.map(([action, label]) => el("button", { type: "button", "data-action": action, text: label }))));
}

function formatValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "object") return String(v);
  if (Array.isArray(v)) return v.map(formatValue).join(", ");
  return Object.entries(v).filter(([, x]) => x !== null && x !== undefined)
    .map(([k, x]) => (typeof x === "object" ? `${k}: ${formatValue(x)}` : `${k}=${x}`)).join(", ");
}

function uptime(status) {
  if (status.state !== "Running") return "";
  let s = Math.max(0, Math.floor((Date.now() - status.since_unix_ms) / 1000));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  s %= 60;
  if (d) return `${d}d${h}h`;
  if (h) return `${h}h${m}m`;
  if (m) return `${m}m${s}s`;
  return `${s}s`;
}

function cellText(key, status) {
  switch (key) {
    case "state": return status.state + (status.debug ? " (debug)" : "");
    case "uptime": return uptime(status);
    case "pid": return status.pid == null ? "" : String(status.pid);
    case "runtime": return status.runtime || "-";
    case "sandbox": return status.sandbox ? `landlock v${status.sandbox.abi}` : "";
    case "limits": return (status.limits || []).map((l) => `${l.limit.replace("_", " ")} ${l.value} (${l.by})`).join(", ");
    default: return formatValue(status[key]);
  }
}

// A clone of the template: a thousand rows of 15 elements are made in a
// fraction of the time that building each element takes.
function newRow(id) {
  const tr = rowTemplate.cloneNode(true);
  tr.dataset.id = id;
  const cells = {};
  shown.forEach(([key], i) => { cells[key] = tr.cells[i]; });
  const [start, stop, restart] = tr.lastElementChild.children;
  return { tr, cells, buttons: { start, stop, restart }, status: null };
}

// Writes only what changes: a write the page does not need is still work for
// the browser, a thousand times over during a restart of all.
function set(node, property, value) {
  if (node[property] !== value) node[property] = value;
}

function newGroup() {
  return el("tbody", { role: "rowgroup" });
}

// Inserts a row where its id sorts, as the server sorts them (a scan of the
// rows: a new bundle is rare), into the group of the row it goes before, or
// at the end. A group grown to twice GROUP is split in two.
function placeRow(id, row) {
  const groups = table.tBodies;
  let group = groups[groups.length - 1];
  let before = null;
  for (const tr of table.querySelectorAll("tbody > tr")) {
    if (tr.dataset.id > id) { before = tr; group = tr.parentNode; break; }
  }
  if (!before && group.rows.length >= GROUP) group = table.appendChild(newGroup());
  group.insertBefore(row.tr, before);
  if (group.rows.length >= 2 * GROUP) {
    const half = newGroup();
    half.append(...[...group.rows].slice(GROUP));
    group.after(half);
  }
}

function fillRow(row, status) {
  row.status = status;
  if (row.tr.dataset.state !== status.state) row.tr.dataset.state = status.state;
  for (const [key] of shown) set(row.cells[key], "textContent", cellText(key, status));
  const busy = row.tr.dataset.busy === "1";
  const active = ["Running", "Starting"].includes(status.state);
  const { start, stop, restart } = row.buttons;
  set(start, "hidden", active);
  set(stop, "hidden", !active && status.state !== "Stopping");
  for (const button of [start, stop, restart]) set(button, "disabled", busy);
}

function growColumns(status) {
  let grew = false;
  for (const col of OPTIONAL) {
    if (col[0] in status && !shown.includes(col)) { shown.push(col); grew = true; }
  }
  if (!grew) return;
  // Rare (once per new kind of field): redraw every row with the new columns.
  drawHeader();
  for (const [id, row] of rows) {
    const fresh = newRow(id);
    row.tr.replaceWith(fresh.tr);
    if (row.tr.classList.contains("selected")) fresh.tr.classList.add("selected");
    rows.set(id, fresh);
    fillRow(fresh, row.status);
  }
}

function upsert(status) {
  growColumns(status);
  let row = rows.get(status.id);
  if (!row) {
    row = newRow(status.id);
    rows.set(status.id, row);
    placeRow(status.id, row);
  }
  fillRow(row, status);
}

function removeRow(id) {
  const row = rows.get(id);
  if (row) {
    const group = row.tr.parentNode;
    row.tr.remove();
    rows.delete(id);
    // The last group stays, for the next row.
    if (!group.rows.length && table.tBodies.length > 1) group.remove();
  }
  if (selected === id) closeSettings();
}

function summarize() {
  const counts = {};
  for (const { status } of rows.values()) counts[status.state] = (counts[status.state] || 0) + 1;
  const parts = Object.entries(counts).sort().map(([s, n]) => `${n} ${s}`);
  document.querySelector("#summary").textContent = `${rows.size} plugins` + (parts.length ? ": " + parts.join(", ") : "");
}
let summaryQueued = false;
function queueSummary() {
  if (summaryQueued) return;
  summaryQueued = true;
  requestAnimationFrame(() => { summaryQueued = false; summarize(); });
}

// The whole table, from a snapshot: every row updated, new ones added,
// gone ones removed. The first one builds the groups off the document and
// puts them in at once, in place of the page's empty one.
function applySnapshot(statuses) {
  if (rows.size === 0 && statuses.length) {
    const groups = document.createDocumentFragment();
    for (const s of statuses) growColumns(s);
    let group = null;
    for (const s of statuses) {
      const row = newRow(s.id);
      rows.set(s.id, row);
      fillRow(row, s);
      if (!group || group.rows.length === GROUP) group = groups.appendChild(newGroup());
      group.append(row.tr);
    }
    table.tBodies[0].replaceWith(groups);
  } else {
    const seen = new Set();
    for (const s of statuses) { seen.add(s.id); upsert(s); }
    for (const id of [...rows.keys()]) if (!seen.has(id)) removeRow(id);
  }
  queueSummary();
  table.dataset.loaded = "1";
}

setInterval(() => {
  for (const row of rows.values()) {
    if (row.status.state === "Running") {
      set(row.cells.uptime, "textContent", uptime(row.status));
    }
  }
}, 1000);

// --- events ----------------------------------------------------------------

function describe(e) {
  const s = e.status;
  switch (e.event) {
    case "starting": return "starting";
    case "queued": return s.note || "queued";
    case "running": return `Running (pid ${s.pid}, healthy ${e.startup_ms} ms after launch, restarts ${s.restarts})`;
    case "failed_to_start": return `failed to start: ${e.error}`;
    case "crashed": return `crashed (${e.exit})`;
    case "unhealthy": return `unhealthy: ${e.reason}`;
    case "restart_scheduled": return `restart #${e.attempt} in ${e.delay_ms} ms`;
    case "disabled": return `FailedToStayRunning: ${e.reason}`;
    case "debugging": return e.on ? "debug mode" : "debug mode ended";
    case "stopping": return "stopping";
    case "stopped": return e.method ? `stopped ${e.method} (${e.exit})` : "stopped";
    case "added": return "new bundle";
    case "reloaded": return `new version ${s.version} (was ${e.previous_version})`;
    case "reload_refused": return `new version refused: ${e.reason}`;
    case "removed": return "bundle removed";
    default: return e.event;
  }
}

const eventList = document.querySelector("#events");
function logEvent(id, text, when) {
  const time = (when ? new Date(when) : new Date()).toTimeString().slice(0, 8);
  const li = el("li", { "data-id": id }, el("time", { text: time }), `${id}: ${text.split("\n")[0]}`);
  eventList.prepend(li);
  while (eventList.childElementCount > MAX_EVENTS) eventList.lastElementChild.remove();
}

function connect() {
  const status = document.querySelector("#connection");
  const source = new EventSource("/api/v1/ui/events");
  // First after each (re)connection, and again when the page fell behind
  // the host: every status, then the events from there on.
  source.addEventListener("snapshot", (message) => {
    const snapshot = JSON.parse(message.data);
    status.dataset.state = "live";
    status.textContent = "live";
    if (snapshot.missed) logEvent("page", `fell behind by ${snapshot.missed} events; the table was sent again`);
    // What happened before the page opened (not again after a reconnection).
    if (!eventList.childElementCount) {
      for (const e of snapshot.recent || []) logEvent(e.status.id, describe(e), e.status.since_unix_ms);
    }
    applySnapshot(snapshot.statuses);
  });
  source.addEventListener("plugin", (message) => {
    const e = JSON.parse(message.data);
    if (e.event === "removed") removeRow(e.status.id); else upsert(e.status);
    logEvent(e.status.id, describe(e));
    queueSummary();
    if (selected === e.status.id && e.event === "reloaded") openSettings(selected);
  });
  source.onerror = () => {
    status.dataset.state = "lost";
    status.textContent = "connection lost, reconnecting…";
  };
}

// --- actions ---------------------------------------------------------------

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "X-Plugvisor-Token": TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  let answer = {};
  try { answer = await response.json(); } catch (_) { answer = { error: `${response.status} ${response.statusText}` }; }
  return { ok: response.ok, answer };
}

table.addEventListener("click", async (click) => {
  const button = click.target.closest("button[data-action]");
  if (!button) return;
  const { action } = button.dataset;
  const { id } = button.closest("tr").dataset;
  if (action === "settings") { openSettings(id); return; }
  const row = rows.get(id);
  row.tr.dataset.busy = "1";
  fillRow(row, row.status);
  notice("");
  try {
    const { ok, answer } = await post(`/api/v1/ui/plugins/${encodeURIComponent(id)}/${action}`);
    if (!ok) notice(`${action} ${id}: ${answer.error}`);
  } catch (e) {
    notice(`${action} ${id}: ${e.message}`);
  } finally {
    delete row.tr.dataset.busy;
    const current = rows.get(id);
    if (current) fillRow(current, current.status);
  }
});

// --- the settings form, from the settings_schema ----------------------------

const panel = document.querySelector("#settings");
const form = panel.querySelector("form");
let loaded = {}; // key -> value the form was filled with

function closeSettings() {
  panel.hidden = true;
  selected = null;
  for (const tr of table.querySelectorAll("tr.selected")) tr.classList.remove("selected");
}

const SOURCES = { default: "default", config_file: "config file", operator: "set here or with plugvisor config set" };

function input(setting, value) {
  const name = setting.key;
  const id = `setting-${name}`;
  const text = value === undefined || value === null ? "" : (typeof value === "string" ? value : JSON.stringify(value));
  switch (setting.type) {
    case "bool":
      return el("input", { type: "checkbox", id, name, checked: value === true });
    case "number":
      return el("input", { type: "number", step: "any", id, name, value: text, placeholder: setting.placeholder });
    case "longtext":
    case "custom": {
      const area = el("textarea", { id, name, placeholder: setting.placeholder });
      area.value = text;
      return area;
    }
    case "dropdown": {
      const select = el("select", { id, name });
      for (const o of setting.options) select.append(el("option", { value: o.value, text: o.display_name || o.value, selected: o.value === text }));
      return select;
    }
    case "radio": {
      const group = el("div", { role: "radiogroup", id, "aria-labelledby": `${id}-label` });
      for (const o of setting.options) {
        group.append(el("label", {}, el("input", { type: "radio", name, value: o.value, checked: o.value === text }), " " + (o.display_name || o.value)), " ");
      }
      return group;
    }
    default:
      return el("input", { type: setting.secret ? "password" : "text", id, name, value: text, placeholder: setting.placeholder });
  }
}

function readField(setting) {
  const name = setting.key;
  switch (setting.type) {
    case "bool": return form.elements[name].checked;
    case "radio": {
      const checked = form.querySelector(`input[name="${CSS.escape(name)}"]:checked`);
      return checked ? checked.value : undefined;
    }
    case "custom": {
      const text = form.elements[name].value;
      try { return JSON.parse(text); } catch (_) { return text; }
    }
    default: return form.elements[name].value;
  }
}

function same(a, b) { return JSON.stringify(a) === JSON.stringify(b === undefined ? null : b); }

async function openSettings(id) {
  selected = id;
  for (const tr of table.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  rows.get(id)?.tr.classList.add("selected");
  const response = await fetch(`/api/v1/ui/plugins/${encodeURIComponent(id)}/settings`, { headers: { "X-Plugvisor-Token": TOKEN } });
  const answer = await response.json();
  if (!response.ok) { notice(answer.error); return; }
  fillForm(answer);
  panel.hidden = false;
}

function fillForm(answer) {
  const values = Object.fromEntries(answer.values.map((v) => [v.key, v]));
  panel.querySelector("h2").textContent = `Settings of ${answer.id}`;
  panel.dataset.id = answer.id;
  form.replaceChildren();
  loaded = {};
  if (!answer.settings.length) {
    form.append(el("p", { text: "This plugin has no settings_schema." }));
    return;
  }
  for (const setting of answer.settings) {
    const current = values[setting.key];
    const value = current ? current.value : setting.default;
    const field = el("div", { class: "field", "data-key": setting.key, "data-type": setting.type });
    const label = el(setting.type === "radio" ? "span" : "label", { class: "label", id: `setting-${setting.key}-label`, for: setting.type === "radio" ? undefined : `setting-${setting.key}`, text: setting.display_name || setting.key });
    if (current) label.append(el("span", { class: "source", text: SOURCES[current.source] || current.source }));
    const control = input(setting, value);
    field.append(label, control);
    if (setting.help_text) field.append(el("p", { class: "help", text: setting.help_text }));
    field.append(el("p", { class: "error", "data-for": setting.key, role: "alert" }));
    form.append(field);
    loaded[setting.key] = readField(setting);
  }
  form.settings = answer.settings;
  form.append(el("button", { type: "submit", text: "Save" }), el("span", { class: "result", role: "status" }));
}

function showErrors(fields) {
  for (const field of form.querySelectorAll(".field")) {
    const problem = (fields || {})[field.dataset.key] || "";
    field.querySelector(".error").textContent = problem;
    field.classList.toggle("invalid", !!problem);
  }
}

form.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const id = panel.dataset.id;
  const result = form.querySelector(".result");
  const values = {};
  for (const setting of form.settings || []) {
    const value = readField(setting);
    if (value !== undefined && !same(value, loaded[setting.key])) values[setting.key] = value;
  }
  showErrors({});
  result.className = "result";
  if (!Object.keys(values).length) { result.textContent = "Nothing changed."; return; }
  result.textContent = "Saving…";
  const { ok, answer } = await post(`/api/v1/ui/plugins/${encodeURIComponent(id)}/settings`, { values });
  if (!ok) {
    showErrors(answer.fields);
    result.classList.add("bad");
    result.textContent = answer.error;
    return;
  }
  const said = {
    live: "Saved: the running plugin accepted it.",
    at_next_activation: "Saved: the plugin gets it when it starts.",
    at_next_restart: "Saved: the plugin has no OnConfigurationChange hook; it gets it at its next restart.",
  }[answer.applied] || "Saved.";
  fillForm({ id, settings: form.settings, values: answer.values });
  form.querySelector(".result").textContent = said;
});

drawHeader();
connect();
