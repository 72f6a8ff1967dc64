// The dashboard: models with their state and memory, load and unload buttons, live plots and the latest requests,
// fed by the server's event stream (/v1/dashboard/stream: a snapshot, then one tick a second).

import { api, errorMessage, sseEvents } from "./api.js";
import { formatBytes, formatClock, formatCount, formatRate, formatSeconds } from "./format.js";
import { colorFor, drawPlot } from "./plot.js";

const $ = (id) => document.getElementById(id);

const view = {
  models: [],
  memory: null,
  series: new Map(), // model id -> points, oldest first
  history: [], // oldest first
  historySize: 100,
  liveSeconds: 300,
  serverTime: 0,
  controller: null,
  rows: new Map(), // model id -> <tr>
  historyDrawn: -1,
  acting: new Set(), // model ids with a load or unload request in flight
};

// `last`: the caption shows the latest value in the window (a first token comes once per request, not each second).
const PLOTS = [
  { id: "plot-tps", field: "tokens_per_second", format: formatRate, suffix: " tok/s", floor: 1 },
  { id: "plot-ttft", field: "ttft_seconds", format: formatSeconds, suffix: "", floor: 0.1, dots: true, last: true },
  { id: "plot-queue", field: "queued", format: formatRate, suffix: " queued", floor: 4, integer: true },
  { id: "plot-running", field: "running", format: formatRate, suffix: " running", floor: 4, integer: true },
];

// --- connection ----------------------------------------------------------------------------------------------
export function startDashboard() {
  if (view.controller) return;
  const controller = new AbortController();
  view.controller = controller;
  follow(controller);
}

export function stopDashboard() {
  view.controller?.abort();
  view.controller = null;
  setConnection("Paused (the dashboard is not shown)");
}

async function follow(controller) {
  let delay = 1000;
  while (!controller.signal.aborted) {
    try {
      setConnection("Connecting…");
      const response = await api("/v1/dashboard/stream", { signal: controller.signal });
      if (response.status === 401) {
        setConnection("This server needs an API key: use the “API key” button, then come back to this tab.");
        view.controller = null;
        return;
      }
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const event of sseEvents(response)) {
        const data = JSON.parse(event.data);
        if (event.event === "snapshot") applySnapshot(data);
        else if (event.event === "tick") applyTick(data);
        setConnection(`Live · ${formatClock(data.time)}`);
        delay = 1000;
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      setConnection(`Disconnected (${error.message}); retrying in ${delay / 1000} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

function setConnection(text) {
  $("dash-connection").textContent = text;
}

// --- data ----------------------------------------------------------------------------------------------------
function applySnapshot(data) {
  view.liveSeconds = data.live_seconds;
  view.historySize = data.history_size;
  view.serverTime = data.time;
  view.models = data.models;
  view.memory = data.memory;
  view.series = new Map(Object.entries(data.series));
  view.history = data.history;
  view.historyDrawn = -1;
  render();
}

function applyTick(data) {
  view.serverTime = data.time;
  view.models = data.models;
  view.memory = data.memory;
  for (const [model, point] of Object.entries(data.points)) {
    if (!view.series.has(model)) view.series.set(model, []);
    view.series.get(model).push(point);
  }
  const oldest = data.time - view.liveSeconds;
  for (const [model, points] of view.series) {
    while (points.length && points[0].time < oldest) points.shift();
    if (!points.length) view.series.delete(model);
  }
  if (data.history.length) {
    view.history.push(...data.history);
    view.history.splice(0, Math.max(0, view.history.length - view.historySize));
  }
  render();
}

function render() {
  renderModels();
  renderMemory();
  renderPlots();
  renderHistory();
}

// --- models --------------------------------------------------------------------------------------------------
function colorOf(modelId) {
  return colorFor(view.models.findIndex((m) => m.model_id === modelId));
}

function stateText(model) {
  if (model.state === "loading") {
    const elapsed = Math.max(0, view.serverTime - model.loading_since);
    const expected = model.expected_load_seconds;
    const guess = expected ? `, about ${Math.min(99, Math.round((100 * elapsed) / expected))}% of the last load's time` : "";
    return `Loading ${formatSeconds(elapsed)}${guess}`;
  }
  if (model.state === "remote") return "Remote";
  if (model.state !== "loaded") return "Not loaded";
  if (model.busy) return `Loaded · busy (${model.running} running${model.queued ? `, ${model.queued} queued` : ""})`;
  if (model.kept_loaded) return "Loaded · idle, kept loaded";
  return `Loaded · idle, unloads in ${formatSeconds(model.unloads_in_seconds)}`;
}

function memoryText(model) {
  if (model.state === "loaded") {
    const gpu = model.accelerator_bytes ? ` (${formatBytes(model.accelerator_bytes)} on GPU)` : "";
    return `${formatBytes(model.size_bytes)} weights${gpu}`;
  }
  return model.files ? `${formatBytes(model.files.size_bytes)} on disk` : "–";
}

function cell(row, index) {
  return row.children[index];
}

function modelRow(modelId) {
  const row = document.createElement("tr");
  row.dataset.model = modelId;
  const name = document.createElement("th");
  name.scope = "row";
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.setAttribute("aria-hidden", "true");
  const label = document.createElement("span");
  label.className = "model-name";
  label.textContent = modelId;
  const detail = document.createElement("div");
  detail.className = "muted small-text model-detail";
  name.append(swatch, label, detail);
  row.append(name);
  const columns = [
    ["state", "State"],
    ["memory", "Memory"],
    ["num context", "Context"],
    ["num queue", "Queue / running"],
  ];
  for (const [className, label] of columns) {
    const td = document.createElement("td");
    td.className = className;
    td.dataset.label = label; // shown before the value where the table becomes cards (phone width)
    row.append(td);
  }
  delete row.children[1].dataset.label;
  const state = cell(row, 1);
  const badge = document.createElement("span");
  badge.className = "badge";
  const progress = document.createElement("progress");
  progress.max = 1;
  progress.hidden = true;
  progress.setAttribute("aria-label", `Loading ${modelId}`);
  state.append(badge, progress);
  const actions = document.createElement("td");
  actions.className = "actions";
  const load = document.createElement("button");
  load.type = "button";
  load.className = "small load";
  load.textContent = "Load";
  load.setAttribute("aria-label", `Load ${modelId}`);
  load.addEventListener("click", () => act(modelId, "load"));
  const unload = document.createElement("button");
  unload.type = "button";
  unload.className = "small secondary unload";
  unload.textContent = "Unload";
  unload.setAttribute("aria-label", `Unload ${modelId}`);
  unload.addEventListener("click", () => act(modelId, "unload"));
  actions.append(load, unload);
  row.append(actions);
  return row;
}

function fillRow(row, model) {
  row.dataset.state = model.state;
  row.querySelector(".swatch").style.backgroundColor = colorOf(model.model_id);
  const files = model.files ? [model.files.parameter_size, model.files.quantization].filter(Boolean) : [];
  row.querySelector(".model-detail").textContent = [model.backend, ...files, ...model.capabilities].join(" · ");
  const badge = row.querySelector(".badge");
  badge.textContent = stateText(model);
  badge.className = `badge state-${model.state}${model.busy ? " busy" : ""}`;
  const progress = row.querySelector("progress");
  progress.hidden = model.state !== "loading";
  if (model.state === "loading") {
    const elapsed = Math.max(0, view.serverTime - model.loading_since);
    if (model.expected_load_seconds) progress.value = Math.min(0.99, elapsed / model.expected_load_seconds);
    else progress.removeAttribute("value"); // indeterminate: no earlier load to compare with
  }
  cell(row, 2).textContent = memoryText(model);
  // Loaded: the context the model was loaded with; otherwise what its files say it was trained for.
  const trained = model.state === "loaded" ? "" : " trained";
  cell(row, 3).textContent = model.context_length ? `${formatCount(model.context_length)}${trained}` : "–";
  cell(row, 4).textContent = model.state === "loaded" ? `${model.queued} / ${model.running} of ${model.max_parallel}` : "–";
  const acting = view.acting.has(model.model_id);
  row.querySelector(".load").disabled = acting || model.state !== "unloaded";
  row.querySelector(".unload").disabled = acting || model.state !== "loaded";
}

function renderModels() {
  const tbody = $("models-table").tBodies[0];
  const wanted = view.models.map((m) => m.model_id);
  for (const model of view.models) {
    if (!view.rows.has(model.model_id)) view.rows.set(model.model_id, modelRow(model.model_id));
    fillRow(view.rows.get(model.model_id), model);
  }
  for (const id of [...view.rows.keys()]) if (!wanted.includes(id)) view.rows.delete(id);
  // Rows move only when the order changed: moving a row would take keyboard focus off its buttons.
  const shown = Array.from(tbody.rows, (row) => row.dataset.model);
  if (shown.join("\n") !== wanted.join("\n")) tbody.replaceChildren(...wanted.map((id) => view.rows.get(id)));
}

function renderMemory() {
  const memory = view.memory;
  if (!memory) return;
  const loaded = view.models.filter((m) => m.state === "loaded").length;
  const parts = [
    `${loaded} of ${view.models.length} models loaded`,
    `${formatBytes(memory.loaded_bytes)} of weights${
      memory.accelerator_bytes ? ` (${formatBytes(memory.accelerator_bytes)} on GPU)` : ""
    }`,
  ];
  if (memory.process_resident_bytes !== null) {
    parts.push(`server process: ${formatBytes(memory.process_resident_bytes)} resident (measured)`);
  }
  $("memory-summary").textContent = parts.join(" · ");
  const budget = $("budget");
  budget.hidden = memory.budget_bytes === null;
  if (memory.budget_bytes !== null) {
    $("budget-meter").value = Math.min(1, memory.loaded_bytes / memory.budget_bytes);
    $("budget-meter").high = 0.9;
    $("budget-text").textContent = `${formatBytes(memory.loaded_bytes)} of ${formatBytes(memory.budget_bytes)}`;
  }
}

async function act(modelId, action) {
  view.acting.add(modelId);
  renderModels();
  dashNotice(action === "load" ? `Loading ${modelId}…` : `Unloading ${modelId}…`);
  try {
    const response = await api(`/v1/models/${encodeURIComponent(modelId)}/${action}`, { method: "POST" });
    if (!response.ok) throw new Error(await errorMessage(response));
    const result = await response.json();
    const index = view.models.findIndex((m) => m.model_id === modelId);
    if (index >= 0) view.models[index] = result.model;
    if (action === "load") dashNotice(`${modelId} loaded (${formatSeconds(result.seconds)}).`);
    else if (result.model.state === "unloaded") dashNotice(`${modelId} unloaded.`);
    else dashNotice(`${modelId} unloads when its requests finish.`);
  } catch (error) {
    dashNotice(`${action === "load" ? "Loading" : "Unloading"} ${modelId} failed: ${error.message}`);
  } finally {
    view.acting.delete(modelId);
    renderModels();
  }
}

function dashNotice(text) {
  const element = $("dash-notice");
  element.textContent = text;
  element.hidden = !text;
}

// --- plots ---------------------------------------------------------------------------------------------------
export function renderPlots() {
  if ($("view-dashboard").hidden) return;
  const order = (id) => {
    const index = view.models.findIndex((m) => m.model_id === id);
    return index < 0 ? view.models.length : index;
  };
  const ids = [...view.series.keys()].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  for (const plot of PLOTS) {
    const lines = ids.map((id) => ({
      color: colorOf(id),
      points: view.series.get(id).map((p) => [p.time - view.serverTime, p[plot.field]]),
    }));
    drawPlot($(plot.id), lines, { seconds: view.liveSeconds, ...plot });
    $(`${plot.id}-now`).textContent = nowText(ids, plot);
  }
  const legend = $("plot-legend");
  legend.replaceChildren(
    ...ids.map((id) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = colorOf(id);
      item.append(swatch, document.createTextNode(id));
      return item;
    }),
  );
}

// The figures now, in words, under each plot (screen readers read it with the plot; so does the browser test).
// Models at zero are left out: the line says what is happening, not what is not.
function nowText(ids, plot) {
  const parts = [];
  for (const id of ids) {
    const points = view.series.get(id);
    let value = points.length ? points[points.length - 1][plot.field] : null;
    if (plot.last && value === null) {
      const last = [...points].reverse().find((p) => p[plot.field] !== null);
      if (last) value = last[plot.field];
    }
    if (value) parts.push(`${id} ${plot.format(value)}${plot.suffix}`);
  }
  if (parts.length) return `Now: ${parts.join(", ")}`;
  if (!ids.length) return "No data yet.";
  return plot.last ? "No request in the last minutes." : "Now: 0 for every model.";
}

// --- history -------------------------------------------------------------------------------------------------
function renderHistory() {
  const last = view.history.length ? view.history[view.history.length - 1].sequence : 0;
  if (last === view.historyDrawn) return;
  view.historyDrawn = last;
  $("history-count").textContent = `(${view.history.length} of the latest ${view.historySize})`;
  const rows = [...view.history].reverse().map((record) => {
    const row = document.createElement("tr");
    row.className = `status-${record.status}`;
    const values = [
      formatClock(record.finished_at),
      record.model_id,
      record.origin || "–",
      formatCount(record.prompt_tokens),
      formatCount(record.completion_tokens),
      formatCount(record.cached_tokens),
      formatSeconds(record.ttft_seconds),
      formatSeconds(record.duration_seconds),
      record.error ? `error (${record.error})` : record.status,
    ];
    values.forEach((value, index) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (index >= 3 && index <= 7) td.className = "num";
      row.append(td);
    });
    return row;
  });
  $("history-table").tBodies[0].replaceChildren(...rows);
}

window.addEventListener("resize", () => renderPlots());
