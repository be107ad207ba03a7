// test-tube serve: the runs table, charts of one metric across runs, one run's media and metadata.
// Plain JS, no build step; charts by uPlot (vendored under /static/uplot). Talks only to this server.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];
const BUILTIN = [["name", "name"], ["version", "version"], ["status", "status"], ["rows", "rows"],
                 ["last_step", "last step"]];

const state = {
  runs: [],            // from /api/runs
  selected: new Set(), // run ids drawn in the chart
  firstLoad: true,
  sortKey: null, sortDesc: false,
  filter: "",
  metric: null, x: "step", smooth: 0.6, logy: false,
  series: new Map(),   // key "id|metric|x" -> {rows, xs, ys, points}
  zoom: null,          // [min, max] of x while zoomed in, else null
  chart: null, chartKey: null,
  detail: null,        // id of the run shown below the chart
  detailRows: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `${response.status} ${response.statusText} for ${url}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// A run of a per_rank=True version is one rank folder: the server needs its rank to find it.
const runQuery = (run) => `name=${encodeURIComponent(run.name)}&version=${run.version}` +
  (run.rank === null || run.rank === undefined ? "" : `&rank=${run.rank}`);
// Chart legend: a rank run as "name v3 r1"; an ordinary run by its id, as before.
const runLabel = (run) => (run.rank === null || run.rank === undefined ? run.id :
  `${run.name} v${run.version} r${run.rank}`);

// -- values --------------------------------------------------------------------

// The server sends NaN and infinities as strings, null for missing.
function num(v) {
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return v;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : String(Number(v.toPrecision(6)));
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// -- the runs table --------------------------------------------------------------

function columns() {
  const cols = BUILTIN.map(([key, label]) => ({key, label, get: (r) => r[key],
    num: key === "version" || key === "rows" || key === "last_step"}));
  // The rank column only when some run is one rank of a per_rank version, as in runs() and `test-tube ls`.
  if (state.runs.some((r) => r.rank !== null && r.rank !== undefined)) {
    cols.splice(2, 0, {key: "rank", label: "rank", get: (r) => r.rank, num: true});
  }
  const tags = [], metrics = [];
  for (const r of state.runs) {
    for (const t of Object.keys(r.tags)) if (!tags.includes(t)) tags.push(t);
    for (const m of Object.keys(r.metrics)) if (!metrics.includes(m)) metrics.push(m);
  }
  for (const t of tags) cols.push({key: "tag:" + t, label: t, get: (r) => r.tags[t], tag: true});
  for (const m of metrics) {
    ["last", "min", "max"].forEach((part, i) => cols.push({key: `${m}.${part}`, label: `${m}.${part}`,
      get: (r) => (r.metrics[m] ? num(r.metrics[m][i]) : null), num: true}));
  }
  return {cols, metrics};
}

function matches(run, cols) {
  const words = state.filter.trim().split(/\s+/).filter(Boolean);
  return words.every((word) => {
    const eq = word.indexOf("=");
    if (eq > 0) {
      const key = word.slice(0, eq).toLowerCase(), want = word.slice(eq + 1).toLowerCase();
      const col = cols.find((c) => c.label.toLowerCase() === key || c.key.toLowerCase() === key);
      return col !== undefined && fmt(col.get(run)).toLowerCase() === want;
    }
    const text = [run.id, run.status, run.description || "", ...Object.values(run.tags).map(fmt)].join(" ");
    return text.toLowerCase().includes(word.toLowerCase());
  });
}

function compare(a, b) {
  const missing = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));
  if (missing(a) || missing(b)) return missing(a) - missing(b);  // missing last, either direction
  if (typeof a === "number" && typeof b === "number") return a - b;
  return fmt(a).localeCompare(fmt(b), undefined, {numeric: true});
}

function renderTable() {
  const {cols, metrics} = columns();
  const head = $("runs").tHead, body = $("runs").tBodies[0];
  const headRow = el("tr", {}, el("th", {title: "draw in the chart"}, ""));
  for (const c of cols) {
    const th = el("th", {class: (c.num ? "num " : "") + (state.sortKey === c.key ? "sorted" + (state.sortDesc ? " desc" : "") : ""),
                         "data-key": c.key, title: "sort"}, c.label);
    th.addEventListener("click", () => {
      state.sortDesc = state.sortKey === c.key ? !state.sortDesc : false;
      state.sortKey = c.key;
      renderTable();
    });
    headRow.append(th);
  }
  head.replaceChildren(headRow);
  let shown = state.runs.filter((r) => matches(r, cols));
  if (state.sortKey) {
    const col = cols.find((c) => c.key === state.sortKey);
    if (col) {
      shown = shown.slice().sort((a, b) => {
        const va = col.get(a), vb = col.get(b);
        const missing = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));
        if (missing(va) || missing(vb)) return compare(va, vb);
        return state.sortDesc ? compare(vb, va) : compare(va, vb);
      });
    }
  }
  const ids = [...state.selected];
  const rows = shown.map((run) => {
    const box = el("input", {type: "checkbox", "aria-label": "draw " + run.id});
    box.checked = state.selected.has(run.id);
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(run.id); else state.selected.delete(run.id);
      renderTable();
      drawChart();
    });
    const i = ids.indexOf(run.id);
    const swatch = i >= 0 ? el("span", {class: "swatch", style: `background:${COLORS[i % COLORS.length]}`}) : "";
    const tr = el("tr", {class: state.selected.has(run.id) ? "selected" : "", "data-run": run.id},
                  el("td", {}, box, swatch));
    for (const c of cols) {
      const v = c.get(run);
      let cell;
      if (c.key === "name") {
        cell = el("td", {}, el("a", {title: "show this run's details and media", onclick: () => showRun(run.id)}, run.name));
      } else if (c.key === "status") {
        cell = el("td", {class: "status-" + v}, v);
      } else {
        cell = el("td", {class: c.num ? "num" : ""}, fmt(v));
      }
      tr.append(cell);
    }
    return tr;
  });
  body.replaceChildren(...rows);
  $("count").textContent = `${shown.length} of ${state.runs.length} runs, ${state.selected.size} selected`;
  const select = $("metric");
  const current = state.metric && metrics.includes(state.metric) ? state.metric : metrics[0] || null;
  if (select.options.length !== metrics.length || [...select.options].some((o, i) => o.value !== metrics[i])) {
    select.replaceChildren(...metrics.map((m) => el("option", {value: m}, m)));
  }
  if (current !== null) select.value = current;
  state.metric = current;
}

function shownRuns() {
  const {cols} = columns();
  return state.runs.filter((r) => matches(r, cols));
}

// -- polling ---------------------------------------------------------------------

async function refreshRuns() {
  let data;
  try {
    data = await getJSON("/api/runs");
  } catch (e) {
    showError(e.message);
    $("live").textContent = "server not answering";
    return;
  }
  showError("");
  $("save-dir").textContent = data.save_dir;
  const before = new Map(state.runs.map((r) => [r.id, r]));
  state.runs = data.runs;
  const present = new Set(state.runs.map((r) => r.id));
  const gone = [...state.selected].filter((id) => !present.has(id));
  for (const id of gone) state.selected.delete(id);
  if (state.firstLoad) {
    state.firstLoad = false;
    for (const r of state.runs.slice(0, COLORS.length)) state.selected.add(r.id);
  }
  renderTable();
  // Redraw when a drawn run has new rows, or the set of runs changed.
  const changed = [...state.selected].some((id) => {
    const old = before.get(id), now = state.runs.find((r) => r.id === id);
    return !old || old.rows !== now.rows || old.last_step !== now.last_step;
  });
  if (changed || gone.length) await drawChart();
  if (state.detail) {
    const run = state.runs.find((r) => r.id === state.detail);
    if (!run) showError(`${state.detail} is gone (deleted while shown)`);
    else if (run.rows !== state.detailRows) await showRun(state.detail, true);
  }
  if (gone.length) showError(`no longer in the save dir (deleted?): ${gone.join(", ")}`);
  const running = state.runs.filter((r) => r.status === "running").length;
  $("live").textContent = `${running} running · updated ${new Date().toLocaleTimeString()}`;
}

// -- the chart -------------------------------------------------------------------

// TensorBoard's smoothing (debiased exponential moving average), as `test-tube plot` does it.
function smooth(values, weight) {
  if (!weight) return values;
  let average = 0, n = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return v;
    average = average * weight + (1 - weight) * v;
    n += 1;
    return average / (1 - Math.pow(weight, n));
  });
}

async function fetchSeries(run, range) {
  const width = Math.max(200, Math.round($("chart").clientWidth || 800));
  let url = `/api/series?${runQuery(run)}&metric=${encodeURIComponent(state.metric)}&x=${state.x}&buckets=${width}`;
  if (range) url += `&x_min=${range[0]}&x_max=${range[1]}`;
  return getJSON(url);
}

let drawSeq = 0;

async function drawChart() {
  const seq = ++drawSeq;  // a newer call (a click during a fetch) wins over an older one
  const target = $("chart");
  const runs = [...state.selected].map((id) => state.runs.find((r) => r.id === id)).filter(Boolean)
    .filter((r) => state.metric && r.metrics[state.metric]);
  if (!state.metric || runs.length === 0) {
    if (state.chart) { state.chart.destroy(); state.chart = null; state.chartKey = null; }
    target.replaceChildren(el("p", {class: "note"}, state.metric ? `no selected run has ${state.metric}` :
      "no numeric metric in these runs yet"));
    $("chart-note").textContent = "";
    return;
  }
  let results;
  try {
    results = await Promise.all(runs.map((r) => fetchSeries(r, state.zoom)));
  } catch (e) {
    showError(e.message);  // e.g. a run deleted between two polls: the next poll drops it
    return;
  }
  if (seq !== drawSeq) return;
  const ids = [...state.selected];
  const tables = [], series = [{label: state.x === "time" ? "seconds" : "step"}];
  let points = 0, shown = 0;
  results.forEach((res, i) => {
    const color = COLORS[ids.indexOf(runs[i].id) % COLORS.length];
    let ys = res.ys.map((v) => (state.logy && v <= 0 ? null : v));
    points += res.points;
    shown += res.xs.length;
    if (state.smooth > 0) {
      tables.push([res.xs, ys]);
      series.push({label: runLabel(runs[i]) + " raw", stroke: color + "40", width: 1, spanGaps: true,
                   value: (u, v) => fmt(v)});
      ys = smooth(ys, state.smooth);
    }
    tables.push([res.xs, ys]);
    series.push({label: runLabel(runs[i]), stroke: color, width: 1.5, spanGaps: true, value: (u, v) => fmt(v)});
  });
  const data = uPlot.join(tables);
  $("chart-note").textContent = `${points.toLocaleString()} points, ${shown.toLocaleString()} drawn` +
    (shown < points ? " (min/max per pixel)" : "");
  const key = JSON.stringify([runs.map((r) => r.id), state.metric, state.x, state.smooth > 0, state.logy]);
  if (state.chart && state.chartKey === key) {
    state.chart.setData(data, state.zoom === null);
    return;
  }
  if (state.chart) state.chart.destroy();
  state.zoom = null;
  const opts = {
    width: Math.max(300, target.clientWidth || 800), height: 360,
    scales: {x: {time: false}, y: {distr: state.logy ? 3 : 1}},
    axes: [{label: state.x === "time" ? "seconds since the first row" : "step"}, {label: state.metric, size: 70}],
    series,
    cursor: {drag: {x: true, y: false}},
    hooks: {setScale: [(u, scale) => { if (scale === "x") onZoom(u); }]},
  };
  target.replaceChildren();
  state.chart = new uPlot(opts, data, target);
  state.chartKey = key;
}

let zoomTimer = null;
// After a zoom, ask for the visible x range again, so the drawn points are exact at that zoom.
function onZoom(u) {
  const min = u.scales.x.min, max = u.scales.x.max;
  const xs = u.data[0];
  const full = !xs.length || (min <= xs[0] && max >= xs[xs.length - 1]);
  const next = full ? null : [min, max];
  if (JSON.stringify(next) === JSON.stringify(state.zoom)) return;
  if (full && state.zoom === null) return;
  clearTimeout(zoomTimer);
  zoomTimer = setTimeout(() => { state.zoom = next; drawChart(); }, 150);
}

// -- one run: details and media ----------------------------------------------------

function kvRows(table, entries) {
  table.replaceChildren(...entries.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmt(v)))));
  if (!entries.length) table.replaceChildren(el("tr", {}, el("td", {}, "none")));
}

async function showRun(id, quiet) {
  const run = state.runs.find((r) => r.id === id);
  if (!run) return;
  let info;
  try {
    info = await getJSON(`/api/run?${runQuery(run)}`);
  } catch (e) {
    showError(e.message);
    return;
  }
  state.detail = id;
  state.detailRows = run.rows;
  $("run-section").hidden = false;
  $("run-title").textContent = `${info.id} · ${info.status} · ${info.rows} rows`;
  kvRows($("run-tags"), Object.entries(info.tags));
  const git = info.meta.git && typeof info.meta.git === "object" ? Object.entries(info.meta.git) : [];
  kvRows($("run-git"), git);
  kvRows($("run-meta"), Object.entries(info.meta).filter(([k]) => k !== "git"));
  renderMedia(run, info.media, quiet);
  if (!quiet) $("run-section").scrollIntoView({behavior: "smooth"});
}

function renderMedia(run, media, keepPlace) {
  const box = $("media");
  const keys = Object.keys(media);
  if (!keys.length) { box.replaceChildren(el("p", {class: "note"}, "no images in this run")); return; }
  const oldKey = keepPlace && box.dataset.key, oldIndex = keepPlace ? Number(box.dataset.index) : -1;
  const select = el("select", {"aria-label": "image key"}, ...keys.map((k) => el("option", {value: k}, k)));
  const slider = el("input", {type: "range", min: "0", step: "1", "aria-label": "step"});
  const label = el("div", {class: "note"});
  const img = el("img", {alt: ""});
  const show = () => {
    const items = media[select.value];
    const i = Math.min(Number(slider.value), items.length - 1);
    const [step, file] = items[i];
    box.dataset.key = select.value; box.dataset.index = String(i);
    label.textContent = `${select.value} · step ${step} (${i + 1} of ${items.length})`;
    img.src = `/media?${runQuery(run)}&file=${encodeURIComponent(file)}`;
    img.alt = `${select.value} at step ${step}`;
  };
  const pickKey = (atEnd) => {
    const n = media[select.value].length;
    slider.max = String(n - 1);
    slider.disabled = n < 2;
    if (atEnd) slider.value = String(n - 1);
    show();
  };
  select.addEventListener("change", () => pickKey(true));
  slider.addEventListener("input", show);
  if (oldKey && media[oldKey]) {
    select.value = oldKey;
    const n = media[oldKey].length;
    slider.max = String(n - 1);
    slider.value = String(oldIndex >= 0 ? Math.min(oldIndex, n - 1) : n - 1);
    slider.disabled = n < 2;
    show();
  } else {
    pickKey(true);
  }
  box.replaceChildren(el("label", {}, "key ", select), slider, label, img);
}

// -- wiring ------------------------------------------------------------------------

function init() {
  $("filter").addEventListener("input", (e) => { state.filter = e.target.value; renderTable(); });
  $("select-all").addEventListener("click", () => {
    for (const r of shownRuns()) state.selected.add(r.id);
    renderTable(); drawChart();
  });
  $("select-none").addEventListener("click", () => { state.selected.clear(); renderTable(); drawChart(); });
  $("metric").addEventListener("change", (e) => { state.metric = e.target.value; state.zoom = null; drawChart(); });
  $("x").addEventListener("change", (e) => { state.x = e.target.value; state.zoom = null; drawChart(); });
  $("smooth").addEventListener("input", (e) => {
    state.smooth = Number(e.target.value);
    $("smooth-value").textContent = state.smooth.toFixed(2);
    drawChart();
  });
  $("logy").addEventListener("change", (e) => { state.logy = e.target.checked; drawChart(); });
  window.addEventListener("resize", () => {
    if (state.chart) state.chart.setSize({width: Math.max(300, $("chart").clientWidth), height: 360});
  });
  const loop = async () => {
    await refreshRuns();
    setTimeout(loop, POLL_MS);
  };
  refreshRuns().then(() => setTimeout(loop, POLL_MS));
}

init();
