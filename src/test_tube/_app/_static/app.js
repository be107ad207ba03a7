// test-tube serve: the runs table; a grid of charts, one per metric, of the ticked runs; a hyperparameter view
// (parallel coordinates, a scatter, the differing tags); a side-by-side comparison; one run's media and metadata.
// Plain JS, no build step; line charts by uPlot (vendored under /static/uplot), the rest in SVG.
// Talks only to this server.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"];
const BUILTIN = [["name", "name"], ["version", "version"], ["status", "status"], ["rows", "rows"],
                 ["last_step", "last step"]];
// A metric starts on log y when every value is above 0 and the largest is at least this many times the smallest.
const LOG_SPAN = 1000;
// A numeric tag's axis is log when every value is above 0 and the largest is at least 10 times the smallest:
// learning rates and batch sizes are searched on log scales.
const TAG_LOG_SPAN = 10;
// Tags a search writes that number the trials rather than choose them: a column, never an axis.
const BOOKKEEPING = new Set(["hpc_exp_number"]);
const AGGREGATES = ["last", "min", "max"];
const SMALL_HEIGHT = 210, BIG_HEIGHT = 440;
const RUNS_PER_REQUEST = 40;  // runs in one /api/series_many request (the URL stays short)
const TABLE_ROWS = 200;

const state = {
  runs: [],            // from /api/runs
  index: new Map(),    // run id -> run
  runsText: null,      // its last answer, to skip redrawing the table when nothing changed
  selected: new Set(), // ticked run ids: drawn in the charts
  colors: new Map(),   // run id -> color index, kept while the page is open
  firstLoad: true,
  sortKey: null, sortDesc: false,
  filter: "",
  tableRows: TABLE_ROWS, // rows the table draws (Infinity after "show the other runs")
  view: "charts",
  x: "step", smooth: 0.6,
  zoom: null,          // [min, max] of x while zoomed in (every chart), else null
  cards: new Map(),    // metric -> {card, body, box, plot, key, logyAuto, logyUser}
  gridKey: null,
  enlarged: null,      // the metric whose chart is enlarged
  hp: {metric: null, agg: "last", tag: null, brushes: new Map(), population: null},
  infos: new Map(),    // run id -> {rows, info} from /api/run, for the comparison
  detail: null,        // id of the run shown below the charts
  detailRows: null,
};

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
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
// Chart legend: a rank run as "name v3 r1"; an ordinary run by its id.
const runLabel = (run) => (run.rank === null || run.rank === undefined ? run.id :
  `${run.name} v${run.version} r${run.rank}`);

function colorOf(id) {
  if (!state.colors.has(id)) state.colors.set(id, state.colors.size);
  return COLORS[state.colors.get(id) % COLORS.length];
}

const byId = (id) => state.index.get(id);
// The ticked runs in table order (name, version, rank), as the server lists them.
const tickedRuns = () => state.runs.filter((r) => state.selected.has(r.id));

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
    AGGREGATES.forEach((part, i) => cols.push({key: `${m}.${part}`, label: `${m}.${part}`,
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

const missing = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));

function compare(a, b) {
  if (missing(a) || missing(b)) return missing(a) - missing(b);  // missing last, either direction
  if (typeof a === "number" && typeof b === "number") return a - b;
  return fmt(a).localeCompare(fmt(b), undefined, {numeric: true});
}

function renderTable() {
  const {cols} = columns();
  const head = $("runs").tHead, body = $("runs").tBodies[0];
  const headRow = el("tr", {}, el("th", {title: "tick to draw in the charts"}, ""));
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
        if (missing(va) || missing(vb)) return compare(va, vb);
        return state.sortDesc ? compare(vb, va) : compare(va, vb);
      });
    }
  }
  // A table of thousands of runs is slow to lay out: the first TABLE_ROWS rows (of the filtered, sorted
  // runs), and a button for the rest.
  const more = shown.length - state.tableRows;
  const rows = (more > 0 ? shown.slice(0, state.tableRows) : shown).map((run) => {
    const ticked = state.selected.has(run.id);
    const box = el("input", {type: "checkbox", "aria-label": "draw " + run.id});
    box.checked = ticked;
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(run.id); else state.selected.delete(run.id);
      dropBrushes();
      selectionChanged();
    });
    const swatch = ticked ? el("span", {class: "swatch", style: `background:${colorOf(run.id)}`}) : "";
    const tr = el("tr", {class: ticked ? "selected" : "", "data-run": run.id}, el("td", {}, box, swatch));
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
  if (more > 0) {
    rows.push(el("tr", {class: "more"}, el("td", {colspan: cols.length + 1},
      el("button", {type: "button", id: "show-all", onclick: () => { state.tableRows = Infinity; renderTable(); }},
         `show the other ${more.toLocaleString()} runs`), " (the filter and sorting take every run)")));
  }
  body.replaceChildren(...rows);
  $("count").textContent = `${shown.length} of ${state.runs.length} runs, ${state.selected.size} ticked`;
}

function shownRuns() {
  const {cols} = columns();
  return state.runs.filter((r) => matches(r, cols));
}

// The ticked runs changed: the table's boxes, the charts and the open view follow.
function selectionChanged() {
  renderTable();
  drawGrid();
  renderView();
}

// -- polling ---------------------------------------------------------------------

async function refreshRuns() {
  let data, text;
  try {
    const response = await fetch("/api/runs", {cache: "no-store"});
    text = await response.text();
    data = JSON.parse(text);
    if (!response.ok) throw new Error(data && data.error ? data.error : `${response.status} for /api/runs`);
  } catch (e) {
    showError(e.message);
    $("live").textContent = "server not answering";
    return;
  }
  showError("");
  const running = data.runs.filter((r) => r.status === "running").length;
  $("live").textContent = `${running} running · updated ${new Date().toLocaleTimeString()}`;
  if (text === state.runsText) return;  // nothing new: no redraw
  state.runsText = text;
  $("save-dir").textContent = data.save_dir;
  const before = new Map(state.runs.map((r) => [r.id, r]));
  state.runs = data.runs;
  state.index = new Map(state.runs.map((r) => [r.id, r]));
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
    const old = before.get(id), now = byId(id);
    return !old || old.rows !== now.rows || old.last_step !== now.last_step;
  });
  if (changed || gone.length) {
    await drawGrid();
    renderView();
  }
  if (state.detail) {
    const run = byId(state.detail);
    if (!run) showError(`${state.detail} is gone (deleted while shown)`);
    else if (run.rows !== state.detailRows) await showRun(state.detail, true);
  }
  if (gone.length) showError(`no longer in the save dir (deleted?): ${gone.join(", ")}`);
}

// -- the grid: one chart per metric ----------------------------------------------

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

// The metrics of the given runs in first-logged order: each run's columns in the order they were first
// logged, runs in table order.
function metricsOf(runs) {
  const order = [], seen = new Set();
  for (const r of runs) for (const m of Object.keys(r.metrics)) if (!seen.has(m)) { seen.add(m); order.push(m); }
  return order;
}

// Metrics grouped by the part of the name before the first "/" ("" for none), groups in first-logged order.
function groupsOf(metrics) {
  const groups = new Map();
  for (const m of metrics) {
    const i = m.indexOf("/");
    const g = i > 0 ? m.slice(0, i) : "";
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(m);
  }
  return groups;
}

// The log-y rule, on every finite value of the metric in the drawn runs (the envelope keeps each run's
// lowest and highest point, so the drawn points hold the true extremes).
function spansDecades(seriesList) {
  let lo = Infinity, hi = -Infinity;
  for (const res of seriesList) for (const v of res.ys) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return lo > 0 && Number.isFinite(hi) && hi / lo >= LOG_SPAN;
}

function buildGrid(metrics) {
  const key = JSON.stringify(metrics);
  if (key === state.gridKey) return;
  state.gridKey = key;
  const grid = $("grid");
  const keep = new Map();
  const children = [];
  const groups = groupsOf(metrics);
  for (const [group, names] of groups) {
    if (groups.size > 1 || group) children.push(el("h3", {class: "group", "data-group": group}, group ? group + "/" : "(no group)"));
    const box = el("div", {class: "cards", "data-group": group});
    for (const metric of names) {
      let c = state.cards.get(metric);
      if (!c) c = makeCard(metric);
      keep.set(metric, c);
      box.append(c.card);
    }
    children.push(box);
  }
  for (const [metric, c] of state.cards) if (!keep.has(metric) && c.plot) c.plot.destroy();
  state.cards = keep;
  if (state.enlarged && !keep.has(state.enlarged)) state.enlarged = null;
  grid.replaceChildren(...children);
}

function makeCard(metric) {
  const logBox = el("input", {type: "checkbox", class: "logy", "aria-label": "log y for " + metric});
  const enlarge = el("button", {type: "button", class: "enlarge", title: "enlarge this chart"}, "enlarge");
  const body = el("div", {class: "chart-body"});
  const card = el("div", {class: "chart-card", "data-metric": metric},
    el("div", {class: "chart-head"}, el("span", {class: "chart-title", title: metric}, metric),
       el("label", {}, logBox, " log y"), enlarge),
    body);
  const c = {card, body, logBox, plot: null, key: null, logyAuto: false, logyUser: null};
  logBox.addEventListener("change", () => { c.logyUser = logBox.checked; drawGrid(); });
  enlarge.addEventListener("click", () => {
    state.enlarged = state.enlarged === metric ? null : metric;
    drawGrid().then(() => card.scrollIntoView({block: "nearest"}));
  });
  return c;
}

function cardWidth(c) {
  return Math.max(240, Math.round(c.body.clientWidth || 400));
}

let drawSeq = 0;

async function drawGrid() {
  const seq = ++drawSeq;  // a newer call (a click during a fetch) wins over an older one
  const runs = tickedRuns();
  const metrics = metricsOf(runs);
  for (const c of state.cards.values()) c.card.classList.toggle("big", false);
  buildGrid(metrics);
  if (state.enlarged && state.cards.has(state.enlarged)) state.cards.get(state.enlarged).card.classList.add("big");
  $("zoom-out").hidden = state.zoom === null;
  if (!runs.length || !metrics.length) {
    $("grid").replaceChildren(el("p", {class: "note"}, runs.length ? "no numeric metric in the ticked runs yet" :
      "tick runs in the table to draw them"));
    state.gridKey = null;
    $("chart-note").textContent = "";
    return;
  }
  let buckets = 240;
  for (const c of state.cards.values()) buckets = Math.max(buckets, cardWidth(c));
  const tail = `&x=${state.x}&buckets=${Math.min(buckets, 10000)}` +
    (state.zoom ? `&x_min=${state.zoom[0]}&x_max=${state.zoom[1]}` : "");
  const names = metrics.map((m) => "metric=" + encodeURIComponent(m)).join("&");
  const requests = [];
  for (let i = 0; i < runs.length; i += RUNS_PER_REQUEST) {
    const ids = runs.slice(i, i + RUNS_PER_REQUEST).map((r) => "run=" + encodeURIComponent(r.id)).join("&");
    requests.push(getJSON(`/api/series_many?${ids}&${names}${tail}`));
  }
  let answers;
  try {
    answers = await Promise.all(requests);
  } catch (e) {
    showError(e.message);
    return;
  }
  if (seq !== drawSeq) return;
  const byMetric = new Map(metrics.map((m) => [m, []]));
  let points = 0, shown = 0;
  const problems = [];
  for (const answer of answers) {
    for (const res of answer.series) {
      if (byMetric.has(res.metric)) byMetric.get(res.metric).push(res);
      points += res.points;
      shown += res.xs.length;
    }
    for (const e of answer.errors) problems.push(e.error);
  }
  if (problems.length) showError(problems.join("; "));
  $("chart-note").textContent = `${metrics.length} metrics of ${runs.length} runs: ${points.toLocaleString()} points, ` +
    `${shown.toLocaleString()} drawn` + (shown < points ? " (min/max per pixel)" : "");
  const order = new Map(runs.map((r, i) => [r.id, i]));
  for (const [metric, list] of byMetric) {
    list.sort((a, b) => order.get(a.id) - order.get(b.id));
    drawCard(state.cards.get(metric), metric, list);
  }
}

let applyingZoom = false;

function drawCard(c, metric, list) {
  if (state.zoom === null) c.logyAuto = spansDecades(list);
  const logy = c.logyUser === null ? c.logyAuto : c.logyUser;
  c.logBox.checked = logy;
  c.card.dataset.logy = String(logy);
  const big = state.enlarged === metric;
  const tables = [], series = [{label: state.x === "time" ? "seconds" : "step"}];
  for (const res of list) {
    const run = byId(res.id);
    const color = colorOf(res.id);
    const label = run ? runLabel(run) : res.id;
    let ys = logy ? res.ys.map((v) => (v <= 0 ? null : v)) : res.ys;
    if (state.smooth > 0) {
      tables.push([res.xs, ys]);
      series.push({label: label + " raw", stroke: color + "40", width: 1, spanGaps: true, value: (u, v) => fmt(v)});
      ys = smooth(ys, state.smooth);
    }
    tables.push([res.xs, ys]);
    series.push({label, stroke: color, width: 1.5, spanGaps: true, value: (u, v) => fmt(v)});
  }
  if (!tables.length) {
    if (c.plot) { c.plot.destroy(); c.plot = null; c.key = null; }
    c.body.replaceChildren(el("p", {class: "note"}, `no ticked run has ${metric}`));
    return;
  }
  const data = uPlot.join(tables);
  const key = JSON.stringify([list.map((r) => r.id), state.x, state.smooth > 0, logy, big]);
  const height = big ? BIG_HEIGHT : SMALL_HEIGHT;
  if (c.plot && c.key === key) {
    c.plot.setData(data, state.zoom === null);
  } else {
    if (c.plot) c.plot.destroy();
    const opts = {
      width: cardWidth(c), height,
      scales: {x: {time: false}, y: {distr: logy ? 3 : 1}},
      axes: [{label: big ? (state.x === "time" ? "seconds since the first row" : "step") : undefined,
              size: big ? 50 : 30}, {size: 60}],
      series,
      legend: {show: big},
      cursor: {drag: {x: true, y: false}},
      hooks: {setScale: [(u, scale) => { if (scale === "x") onZoom(u); }]},
    };
    c.body.replaceChildren();
    c.plot = new uPlot(opts, data, c.body);
    c.key = key;
  }
  if (state.zoom !== null) {
    applyingZoom = true;
    try { c.plot.setScale("x", {min: state.zoom[0], max: state.zoom[1]}); } finally { applyingZoom = false; }
  }
}

let zoomTimer = null;
// After a zoom in one chart, every chart shows that x range, asked again of the server so the drawn
// points are exact at that zoom.
function onZoom(u) {
  if (applyingZoom) return;
  const min = u.scales.x.min, max = u.scales.x.max;
  const xs = u.data[0];
  const full = !xs.length || (min <= xs[0] && max >= xs[xs.length - 1]);
  const next = full ? null : [min, max];
  if (JSON.stringify(next) === JSON.stringify(state.zoom)) return;
  if (full && state.zoom === null) return;
  clearTimeout(zoomTimer);
  zoomTimer = setTimeout(() => { state.zoom = next; drawGrid(); }, 150);
}

// -- the hyperparameter view -------------------------------------------------------

// Tags that differ between the runs (the columns and axes), and those all the runs share (folded away).
// A tag some run lacks differs.
function splitTags(runs) {
  const keys = [];
  for (const r of runs) for (const k of Object.keys(r.tags)) if (!keys.includes(k)) keys.push(k);
  const differing = [], constant = [];
  for (const k of keys) {
    const values = new Set(runs.map((r) => (k in r.tags ? "=" + fmt(r.tags[k]) : "missing")));
    (values.size > 1 ? differing : constant).push(k);
  }
  return {differing, constant};
}

// The runs the view draws: the ticked ones, or, while an axis is brushed, those ticked when brushing began.
function hpRuns() {
  if (state.hp.population) return state.hp.population.map(byId).filter(Boolean);
  return tickedRuns();
}

function metricValue(run, metric, agg) {
  const m = run.metrics[metric];
  if (!m) return null;
  const v = num(m[AGGREGATES.indexOf(agg)]);
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function tickLabel(v) {
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
}

// Ticks at least 12 pixels apart, so their labels never overlap (two values a hair apart get one label).
function spaced(ticks) {
  const out = [];
  for (const t of ticks.slice().sort((a, b) => a.at - b.at)) {
    if (!out.length || Math.abs(t.at - out[out.length - 1].at) >= 12) out.push(t);
  }
  return out;
}

// A scale from values to pixels (lo = the pixel of the smallest): linear, log when every value is above 0 and
// the largest is at least `span` times the smallest, or one evenly spaced position per distinct text value.
function scaleOf(values, lo, hi, span) {
  const present = values.filter((v) => !missing(v) && !(typeof v === "number" && !Number.isFinite(v)));
  const numeric = present.length > 0 && present.every((v) => typeof v === "number");
  if (numeric) {
    const min = Math.min(...present), max = Math.max(...present);
    const log = min > 0 && max / min >= span;
    const f = log ? Math.log10 : (v) => v;
    let a = f(min), b = f(max);
    if (a === b) { a -= 1; b += 1; }
    const pos = (v) => (typeof v === "number" && Number.isFinite(v) && (!log || v > 0) ?
      lo + (f(v) - a) / (b - a) * (hi - lo) : null);
    const distinct = [...new Set(present)].sort((x, y) => x - y);
    let ticks;
    if (distinct.length <= 6) {
      ticks = distinct;  // a search's few values: each one labelled
    } else if (log) {
      ticks = [];
      for (let e = Math.ceil(a); e <= Math.floor(b); e++) ticks.push(Math.pow(10, e));
      if (ticks.length < 2) ticks = [min, max];
    } else {
      ticks = [0, 1, 2, 3, 4].map((i) => min + (max - min) * i / 4);
    }
    return {kind: log ? "log" : "linear", pos, ticks: spaced(ticks.map((v) => ({label: tickLabel(v), at: pos(v)})))};
  }
  const cats = [...new Set(present.map(fmt))].sort((x, y) => x.localeCompare(y, undefined, {numeric: true}));
  const step = cats.length > 1 ? (hi - lo) / (cats.length - 1) : 0;
  const at = (i) => (cats.length > 1 ? lo + i * step : (lo + hi) / 2);
  const pos = (v) => { const i = missing(v) ? -1 : cats.indexOf(fmt(v)); return i < 0 ? null : at(i); };
  return {kind: "category", pos, ticks: spaced(cats.map((c, i) => ({label: c, at: at(i)})))};
}

function hpControls(runs) {
  const metrics = metricsOf(runs);
  const {differing} = splitTags(runs);
  const hp = state.hp;
  if (!metrics.includes(hp.metric)) hp.metric = metrics.find((m) => /loss/i.test(m)) || metrics[0] || null;
  const tags = differing.filter((t) => !BOOKKEEPING.has(t)).concat(differing.filter((t) => BOOKKEEPING.has(t)));
  if (!tags.includes(hp.tag)) hp.tag = tags[0] || null;
  const fill = (select, values, current) => {
    if ([...select.options].map((o) => o.value).join("\n") !== values.join("\n")) {
      select.replaceChildren(...values.map((v) => el("option", {value: v}, v)));
    }
    if (current !== null) select.value = current;
  };
  fill($("hp-metric"), metrics, hp.metric);
  fill($("hp-tag"), tags, hp.tag);
  $("hp-agg").value = hp.agg;
}

function renderHparams() {
  const runs = hpRuns();
  hpControls(runs);
  const hp = state.hp;
  const {differing, constant} = splitTags(runs);
  const axesTags = differing.filter((t) => !BOOKKEEPING.has(t));
  const ticked = state.selected;
  $("hp-note").textContent = runs.length ? `${runs.length} runs, ${runs.filter((r) => ticked.has(r.id)).length} ticked` +
    (hp.brushes.size ? `, ${hp.brushes.size} axis brushed` : "") : "";
  $("hp-clear").hidden = hp.brushes.size === 0;
  renderParallel(runs, axesTags);
  renderScatter(runs);
  // the table: one row per run, the differing tags, the metric; the constant tags folded in its caption
  const table = $("hp-table");
  const metricLabel = hp.metric ? `${hp.metric}.${hp.agg}` : "metric";
  const head = el("tr", {}, el("th", {}, "run"), ...differing.map((t) => el("th", {"data-tag": t}, t)),
                  el("th", {class: "num"}, metricLabel));
  const rows = runs.map((r) => el("tr", {"data-run": r.id, class: ticked.has(r.id) ? "" : "out"},
    el("td", {}, el("span", {class: "swatch", style: `background:${ticked.has(r.id) ? colorOf(r.id) : "#ccc"}`}), runLabel(r)),
    ...differing.map((t) => el("td", {}, t in r.tags ? fmt(r.tags[t]) : "")),
    el("td", {class: "num"}, fmt(hp.metric ? metricValue(r, hp.metric, hp.agg) : null))));
  const folded = constant.length ? el("details", {}, el("summary", {}, `${constant.length} ${constant.length === 1 ? "tag" : "tags"} the same in every run`),
    ...constant.map((t) => el("div", {class: "constant", "data-tag": t}, `${t} = ${fmt(runs[0].tags[t])}`))) : "";
  table.replaceChildren(el("caption", {}, folded), el("thead", {}, head), el("tbody", {}, ...rows));
  if (!runs.length) table.replaceChildren(el("caption", {}, "tick runs in the table to see their hyperparameters"));
}

const PC_HEIGHT = 320, PC_TOP = 30, PC_BOTTOM = 30;

function renderParallel(runs, axesTags) {
  const box = $("parallel");
  const hp = state.hp;
  if (!runs.length || !hp.metric) { box.replaceChildren(); return; }
  const axes = axesTags.map((t) => ({key: "tag:" + t, label: t, get: (r) => r.tags[t]}));
  axes.push({key: "metric", label: `${hp.metric}.${hp.agg}`, get: (r) => metricValue(r, hp.metric, hp.agg)});
  const width = Math.max(400, box.clientWidth || 900);
  const left = 70, right = 90;
  const gap = axes.length > 1 ? (width - left - right) / (axes.length - 1) : 0;
  const bottom = PC_HEIGHT - PC_BOTTOM;
  axes.forEach((a, i) => {
    a.x = axes.length > 1 ? left + i * gap : width / 2;
    a.scale = scaleOf(runs.map(a.get), bottom, PC_TOP, a.key === "metric" ? LOG_SPAN : TAG_LOG_SPAN);
  });
  const root = svg("svg", {width, height: PC_HEIGHT, class: "parallel", role: "img",
                           "aria-label": "parallel coordinates of the runs' differing tags and " + axes[axes.length - 1].label});
  const lines = svg("g", {class: "lines"});
  for (const r of runs) {
    let d = "", pen = false;
    for (const a of axes) {
      const y = a.scale.pos(a.get(r));
      if (y === null) { pen = false; continue; }
      d += (pen ? " L " : " M ") + a.x.toFixed(1) + " " + y.toFixed(1);
      pen = true;
    }
    const on = state.selected.has(r.id);
    lines.append(svg("path", {d: d.trim(), "data-run": r.id, class: on ? "on" : "off",
                              stroke: on ? colorOf(r.id) : "#c8ccd2"}, svg("title", {}, runLabel(r))));
  }
  root.append(lines);
  for (const a of axes) {
    const g = svg("g", {class: "axis", "data-axis": a.key, "data-scale": a.scale.kind});
    g.append(svg("line", {x1: a.x, x2: a.x, y1: PC_TOP, y2: bottom, class: "axis-line"}));
    g.append(svg("text", {x: a.x, y: PC_TOP - 12, class: "axis-label", "text-anchor": "middle"}, a.label));
    for (const t of a.scale.ticks) {
      g.append(svg("line", {x1: a.x - 4, x2: a.x, y1: t.at, y2: t.at, class: "tick"}));
      g.append(svg("text", {x: a.x - 7, y: t.at + 4, class: "tick-label", "text-anchor": "end"}, t.label));
    }
    const brush = hp.brushes.get(a.key);
    if (brush) g.append(svg("rect", {x: a.x - 9, width: 18, y: brush[0], height: brush[1] - brush[0], class: "brush"}));
    const area = svg("rect", {x: a.x - 14, width: 28, y: PC_TOP - 6, height: bottom - PC_TOP + 12, class: "brush-area"});
    area.append(svg("title", {}, "drag to brush " + a.label));
    brushable(area, g, a);
    g.append(area);
    root.append(g);
  }
  box.replaceChildren(root);
  state.hp.axes = axes;
}

// Drag along an axis to brush a range of it; a click without a drag clears the axis's brush.
function brushable(area, group, axis) {
  let start = null, rect = null;
  const yOf = (e) => {
    const box = area.ownerSVGElement.getBoundingClientRect();
    return Math.min(PC_HEIGHT - PC_BOTTOM + 6, Math.max(PC_TOP - 6, e.clientY - box.top));
  };
  area.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    area.setPointerCapture(e.pointerId);
    start = yOf(e);
    rect = svg("rect", {x: axis.x - 9, width: 18, y: start, height: 0, class: "brush"});
    group.insertBefore(rect, area);
  });
  area.addEventListener("pointermove", (e) => {
    if (start === null) return;
    const y = yOf(e);
    rect.setAttribute("y", Math.min(start, y));
    rect.setAttribute("height", Math.abs(y - start));
  });
  area.addEventListener("pointerup", (e) => {
    if (start === null) return;
    const y = yOf(e);
    const range = [Math.min(start, y), Math.max(start, y)];
    start = null;
    if (range[1] - range[0] < 3) brush(axis.key, null); else brush(axis.key, range);
  });
}

// Set (or, with null, clear) one axis's brush and tick exactly the drawn runs inside every brush.
function brush(key, range) {
  const hp = state.hp;
  if (!hp.population) hp.population = tickedRuns().map((r) => r.id);
  if (range) hp.brushes.set(key, range); else hp.brushes.delete(key);
  const runs = hp.population.map(byId).filter(Boolean);
  if (hp.brushes.size === 0) {
    state.selected = new Set(runs.map((r) => r.id));
    hp.population = null;
  } else {
    const axes = new Map((hp.axes || []).map((a) => [a.key, a]));
    state.selected = new Set(runs.filter((r) => [...hp.brushes].every(([k, [lo, hi]]) => {
      const a = axes.get(k);
      const y = a ? a.scale.pos(a.get(r)) : null;
      return y !== null && y >= lo && y <= hi;
    })).map((r) => r.id));
  }
  selectionChanged();
}

// Ticking by hand ends the brushing: the ticks are the user's again.
function dropBrushes() {
  state.hp.brushes.clear();
  state.hp.population = null;
}

function renderScatter(runs) {
  const box = $("scatter");
  const hp = state.hp;
  if (!runs.length || !hp.metric || !hp.tag) {
    box.replaceChildren(el("p", {class: "note"}, runs.length > 1 ? "no tag differs between these runs" : ""));
    return;
  }
  const width = 460, height = 300, left = 70, right = 20, top = 20, bottom = 50;
  const xs = scaleOf(runs.map((r) => r.tags[hp.tag]), left, width - right, TAG_LOG_SPAN);
  const ys = scaleOf(runs.map((r) => metricValue(r, hp.metric, hp.agg)), height - bottom, top, LOG_SPAN);
  const root = svg("svg", {width, height, class: "scatter", "data-x-scale": xs.kind, "data-y-scale": ys.kind});
  root.append(svg("line", {x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis-line"}));
  root.append(svg("line", {x1: left, x2: left, y1: top, y2: height - bottom, class: "axis-line"}));
  for (const t of xs.ticks) root.append(svg("text", {x: t.at, y: height - bottom + 16, "text-anchor": "middle", class: "tick-label"}, t.label));
  for (const t of ys.ticks) root.append(svg("text", {x: left - 6, y: t.at + 4, "text-anchor": "end", class: "tick-label"}, t.label));
  root.append(svg("text", {x: (left + width - right) / 2, y: height - 10, "text-anchor": "middle", class: "axis-label"}, hp.tag));
  root.append(svg("text", {x: 14, y: (top + height - bottom) / 2, "text-anchor": "middle", class: "axis-label",
                           transform: `rotate(-90 14 ${(top + height - bottom) / 2})`}, `${hp.metric}.${hp.agg}`));
  for (const r of runs) {
    const x = xs.pos(r.tags[hp.tag]), y = ys.pos(metricValue(r, hp.metric, hp.agg));
    if (x === null || y === null) continue;
    const on = state.selected.has(r.id);
    root.append(svg("circle", {cx: x, cy: y, r: 5, "data-run": r.id, class: on ? "on" : "off",
                               fill: on ? colorOf(r.id) : "#c8ccd2"}, svg("title", {}, runLabel(r))));
  }
  box.replaceChildren(root);
}

// -- compare: ticked runs side by side -------------------------------------------------

async function runInfo(run) {
  const known = state.infos.get(run.id);
  if (known && known.rows === run.rows && known.status === run.status) return known.info;
  const info = await getJSON(`/api/run?${runQuery(run)}`);
  state.infos.set(run.id, {rows: run.rows, status: run.status, info});
  return info;
}

const GIT_FIELDS = [["head", "commit"], ["branch", "branch"], ["dirty", "dirty"], ["tag", "tag"], ["snapshot", "snapshot"]];

async function renderCompare() {
  const runs = tickedRuns();
  const table = $("compare");
  if (runs.length < 2) {
    $("compare-note").textContent = "Tick two or more runs in the table to compare them.";
    table.replaceChildren();
    return;
  }
  let infos;
  try {
    infos = await Promise.all(runs.map(runInfo));
  } catch (e) {
    showError(e.message);
    return;
  }
  if (state.view !== "compare") return;
  const rows = [];
  const section = (title) => rows.push(el("tr", {class: "section"}, el("th", {colspan: runs.length + 1}, title)));
  const line = (key, label, values, mark) => {
    const texts = values.map((v) => (missing(v) ? "" : fmt(v)));
    const differs = mark && new Set(texts).size > 1;
    rows.push(el("tr", {"data-key": key, class: differs ? "differs" : ""},
      el("th", {}, label, differs ? el("span", {class: "badge", title: "differs between the runs"}, "differs") : ""),
      ...texts.map((t) => el("td", {}, t))));
  };
  const keys = [];
  for (const r of runs) for (const k of Object.keys(r.tags)) if (!keys.includes(k)) keys.push(k);
  section(`tags (${keys.length})`);
  for (const k of keys) line("tag:" + k, k, runs.map((r) => r.tags[k]), true);
  section("git");
  const git = infos.map((i) => (i.meta.git && typeof i.meta.git === "object" ? i.meta.git : {}));
  if (git.every((g) => g.ok === false || !Object.keys(g).length)) {
    line("git:none", "recorded", git.map((g) => g.error || "no"), false);
  } else {
    for (const [k, label] of GIT_FIELDS) line("git:" + k, label, git.map((g) => g[k]), true);
  }
  section("run");
  line("status", "status", runs.map((r) => r.status), true);
  line("rows", "rows", runs.map((r) => r.rows), false);
  line("created_at", "created", runs.map((r) => r.created_at), false);
  line("description", "description", runs.map((r) => r.description), true);
  line("host", "host", infos.map((i) => i.meta.host), true);
  const metrics = metricsOf(runs);
  section("metrics: last (min … max)");
  for (const m of metrics) {
    rows.push(el("tr", {"data-key": "metric:" + m}, el("th", {}, m), ...runs.map((r) => {
      const v = r.metrics[m];
      return el("td", {class: "num"}, v ? `${fmt(num(v[0]))} (${fmt(num(v[1]))} … ${fmt(num(v[2]))})` : "");
    })));
  }
  const head = el("tr", {}, el("th", {}, ""), ...runs.map((r) => el("th", {"data-run": r.id},
    el("span", {class: "swatch", style: `background:${colorOf(r.id)}`}), runLabel(r))));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  const differing = table.querySelectorAll("tr.differs").length;
  $("compare-note").textContent = `${runs.length} runs; ${differing} of the rows differ (marked). ` +
    "Their charts, overlaid, are below.";
}

// -- views ----------------------------------------------------------------------------

function setView(view) {
  state.view = view;
  for (const b of document.querySelectorAll("#views [data-view]")) b.setAttribute("aria-selected", String(b.dataset.view === view));
  $("hparams-section").hidden = view !== "hparams";
  $("compare-section").hidden = view !== "compare";
  renderView();
}

function renderView() {
  if (state.view === "hparams") renderHparams();
  else if (state.view === "compare") renderCompare();
}

// -- one run: details and media ----------------------------------------------------

function kvRows(table, entries) {
  table.replaceChildren(...entries.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmt(v)))));
  if (!entries.length) table.replaceChildren(el("tr", {}, el("td", {}, "none")));
}

async function showRun(id, quiet) {
  const run = byId(id);
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
    dropBrushes();
    selectionChanged();
  });
  $("select-none").addEventListener("click", () => { state.selected.clear(); dropBrushes(); selectionChanged(); });
  for (const b of document.querySelectorAll("#views [data-view]")) b.addEventListener("click", () => setView(b.dataset.view));
  $("x").addEventListener("change", (e) => { state.x = e.target.value; state.zoom = null; drawGrid(); });
  $("smooth").addEventListener("input", (e) => {
    state.smooth = Number(e.target.value);
    $("smooth-value").textContent = state.smooth.toFixed(2);
    drawGrid();
  });
  $("zoom-out").addEventListener("click", () => { state.zoom = null; drawGrid(); });
  $("hp-metric").addEventListener("change", (e) => { state.hp.metric = e.target.value; resetBrushes(); });
  $("hp-agg").addEventListener("change", (e) => { state.hp.agg = e.target.value; resetBrushes(); });
  $("hp-tag").addEventListener("change", (e) => { state.hp.tag = e.target.value; renderHparams(); });
  $("hp-clear").addEventListener("click", resetBrushes);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const [metric, c] of state.cards) {
        if (c.plot) c.plot.setSize({width: cardWidth(c), height: state.enlarged === metric ? BIG_HEIGHT : SMALL_HEIGHT});
      }
      if (state.view === "hparams") renderHparams();
    }, 100);
  });
  const loop = async () => {
    await refreshRuns();
    setTimeout(loop, POLL_MS);
  };
  refreshRuns().then(() => setTimeout(loop, POLL_MS));
}

// A new metric or aggregate redraws the axes: brushes drawn on the old ones no longer mean anything.
function resetBrushes() {
  const hp = state.hp;
  if (hp.population) {
    state.selected = new Set(hp.population.filter(byId));
    dropBrushes();
    selectionChanged();
  } else {
    renderHparams();
  }
}

init();
