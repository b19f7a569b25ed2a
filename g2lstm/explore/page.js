// The g2lstm explorer: plain JavaScript, no library, no network. The data (quantised arrays behind
// a JSON header, gzipped and base64-encoded by g2lstm/explore/pack.py) sits in the element
// #g2lstm-data and is decoded with DecompressionStream. window.g2lstm (read-only) exposes the data
// and the functions the views call, so that tests and the browser console can check the values.
"use strict";
(function () {
  const FIELDS = ["h", "c", "i", "f", "g", "o"];
  const GATES = ["i", "f", "o"];
  const VIEWS = ["corpus", "text", "gates", "match", "units", "clusters"];
  const VIEW_NAMES = { corpus: "Corpus", text: "Text", gates: "Gates", match: "Select & match", units: "Units", clusters: "Co-clusters" };
  const MODEL_COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7"]; // Okabe-Ito: colour-blind-safe
  // Colour-blind-safe scales: a blue-white-red diverging one (ColorBrewer RdBu) and viridis.
  const DIVERGING = [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]];
  const SEQUENTIAL = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const $ = (sel, root) => (root || document).querySelector(sel);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  };
  const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d === undefined ? 3 : d));

  // ------------------------------------------------------------------------------------ decoding
  async function decode() {
    const text = $("#g2lstm-data").textContent.trim();
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    const buffer = await new Response(stream).arrayBuffer();
    const view = new DataView(buffer);
    const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
    if (magic !== "G2X1") throw new Error("not an explorer payload: " + magic);
    const length = view.getUint32(4, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, length)));
    const start = 8 + length + ((4 - ((8 + length) % 4)) % 4);
    const types = { u1: Uint8Array, u2: Uint16Array, f4: Float32Array };
    const arrays = header.arrays.map((s) => {
      const count = s.shape.reduce((a, b) => a * b, 1);
      return new types[s.dtype](buffer, start + s.offset, count);
    });
    return { header, arrays, bytes: buffer.byteLength };
  }

  // ------------------------------------------------------------------------------------ the data
  let H, A; // header, arrays
  const trackIndex = new Map(); // text index -> position among the tracked texts

  function layerOf(m, key) {
    const layer = H.models[m].layers.find((l) => l.key === key);
    if (!layer) throw new Error(`model ${m} has no layer ${key}; it has ${H.models[m].layers.map((l) => l.key)}`);
    return layer;
  }
  function tokens(m, side, n) {
    const source = H.models[m].tokens || H.tokens;
    return source[side][n];
  }
  function isTracked(n) { return trackIndex.has(n); }
  /** The dequantised values of one field of one layer of model m at text n: {steps, units, get(t, u)}. */
  function track(m, key, field, n) {
    const layer = layerOf(m, key);
    const spec = layer.tracks[field];
    if (!spec || !isTracked(n)) return null;
    const j = trackIndex.get(n);
    const offsets = H.models[m].track_offsets[layer.side];
    const units = layer.units[field];
    const q = A[spec.array];
    const step = (spec.hi - spec.lo) / spec.levels;
    const first = offsets[j] * units;
    return {
      steps: offsets[j + 1] - offsets[j], units, step,
      get: (t, u) => spec.lo + q[first + t * units + u] * step,
    };
  }
  function value(m, key, field, n, t, u) {
    const tr = track(m, key, field, n);
    if (!tr) throw new Error(`text ${n} has no full track in this page`);
    if (t < 0 || t >= tr.steps || u < 0 || u >= tr.units) throw new Error(`step ${t} unit ${u} outside ${tr.steps} x ${tr.units}`);
    return tr.get(t, u);
  }
  function perText(arrayEntry, n) {
    const a = A[arrayEntry.array];
    return a.subarray(arrayEntry.offsets[n], arrayEntry.offsets[n + 1]);
  }
  function outputsOf(m, n) { return H.models[m].outputs[n]; }
  /** Per-word information: the layer keys of model m that hold it (those of `side` if given). */
  function informedLayers(m, side) {
    const info = H.models[m].information;
    return info ? Object.keys(info.layers).filter((key) => side === undefined || layerOf(m, key).side === side) : [];
  }
  /** The dequantised sigma of each token of text n for layer `key` of model m, or null where the page has none. */
  function informationOf(m, key, n) {
    const info = H.models[m].information;
    if (!info || n >= info.texts || !info.layers[key]) return null;
    const spec = info.layers[key].sigma, q = perText(spec, n), step = (spec.hi - spec.lo) / spec.levels;
    return Array.from(q, (x) => spec.lo + x * step);
  }
  /** H_i = K/2 log(2 pi e) + K log sigma_i (nats), K the embeddings' width: g2lstm.explore.information.entropy. */
  function entropyOf(m, key, sigma) { const K = H.models[m].information.layers[key].dim; return (K / 2) * Math.log(2 * Math.PI * Math.E) + K * Math.log(sigma); }
  const sig = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toPrecision(4)); // sigma spans decades
  function sameTokens(mA, mB) { return !H.models[mA].tokens && !H.models[mB].tokens; }

  // ---------------------------------------------------------------------------- select and match
  /** LSTMVis's select and match. The units "on" through a selection are those whose value is >= threshold
   * at every step start..end of text n; every window of the same length in every tracked text is then
   * scored by the Jaccard similarity of its own on-set with the selection's, best first (ties: text, start). */
  function selectAndMatch({ model = 0, layer, field = "h", text, start, end, threshold = 0.5, top = 20 }) {
    const sel = track(model, layer, field, text);
    if (!sel) throw new Error(`text ${text} has no full track`);
    if (!(0 <= start && start <= end && end < sel.steps)) throw new Error(`span ${start}..${end} outside the text's ${sel.steps} steps`);
    const on = (tr, s, e) => {
      const set = [];
      for (let u = 0; u < tr.units; u++) {
        let all = true;
        for (let t = s; t <= e && all; t++) all = tr.get(t, u) >= threshold;
        if (all) set.push(u);
      }
      return set;
    };
    const units = on(sel, start, end);
    const chosen = new Set(units);
    const length = end - start + 1;
    const matches = [];
    for (const n of H.tracked) {
      const tr = track(model, layer, field, n);
      for (let s = 0; s + length <= tr.steps; s++) {
        const other = on(tr, s, s + length - 1);
        let both = 0;
        for (const u of other) if (chosen.has(u)) both++;
        const union = units.length + other.length - both;
        matches.push({ text: n, start: s, end: s + length - 1, score: union ? both / union : 0 });
      }
    }
    matches.sort((a, b) => b.score - a.score || a.text - b.text || a.start - b.start);
    return { units, matches: matches.slice(0, top) };
  }

  // ---------------------------------------------------------------------------------- unit search
  function hellingerRank(m, key, field, input, output) {
    // As g2lstm.interpret.rank_neurons' observed distances: the steps (of tracked texts) whose input
    // token is `input`, split by whether their output symbol is `output`; Rice's rule on the smaller
    // group; equal-width bins per unit between its min and max.
    const layer = layerOf(m, key);
    const rows = [];
    const inGroup = [];
    for (const n of H.tracked) {
      const toks = tokens(m, layer.side, n);
      const outs = outputsOf(m, n);
      for (let t = 0; t < toks.length; t++) if (toks[t] === input) { rows.push([n, t]); inGroup.push(outs && layer.side === H.sides[H.sides.length - 1] && outs[t] === output); }
    }
    const nA = inGroup.filter(Boolean).length;
    if (!rows.length || nA === 0 || nA === rows.length) throw new Error(`both groups need samples: ${nA} of ${rows.length} steps with input ${JSON.stringify(input)} have output ${JSON.stringify(output)}`);
    const bins = Math.max(2, Math.round(2 * Math.pow(Math.min(nA, rows.length - nA), 1 / 3)));
    const units = layer.units[field];
    const tracks = new Map();
    for (const [n] of rows) if (!tracks.has(n)) tracks.set(n, track(m, key, field, n));
    const scores = [];
    for (let u = 0; u < units; u++) {
      const v = rows.map(([n, t]) => tracks.get(n).get(t, u));
      let lo = Infinity, hi = -Infinity;
      for (const x of v) { if (x < lo) lo = x; if (x > hi) hi = x; }
      const width = hi > lo ? hi - lo : 1.0;
      const a = new Float64Array(bins), b = new Float64Array(bins);
      v.forEach((x, k) => {
        const i = Math.min(Math.max(Math.trunc(((x - lo) / width) * bins), 0), bins - 1);
        (inGroup[k] ? a : b)[i] += 1;
      });
      const sa = a.reduce((s, x) => s + x, 0), sb = b.reduce((s, x) => s + x, 0);
      let bc = 0;
      for (let i = 0; i < bins; i++) bc += Math.sqrt((a[i] / sa) * (b[i] / sb));
      scores.push({ unit: u, score: Math.sqrt(Math.min(Math.max(1 - bc, 0), 1)) });
    }
    return scores.sort((x, y) => y.score - x.score); // stable: ties keep unit order, as numpy's stable argsort
  }

  /** Units ranked by: 'id' (unit), 'word' (expected response to a word), 'hellinger' (input, output),
   * 'saturation' (share of steps < 0.1 or > 0.9 of a gate), 'difference' (mean |B - A| over tracked steps). */
  function searchUnits({ by, model = 0, other = 1, layer, field = "h", unit, word, input, output, gate = "f", top = 50 }) {
    const L = layerOf(model, layer);
    let scores;
    if (by === "id") {
      if (!(unit >= 0 && unit < L.units[field])) throw new Error(`unit ${unit} outside 0..${L.units[field] - 1}`);
      scores = [{ unit, score: null }];
    } else if (by === "word") {
      const r = L.responses[field] || L.responses.h;
      const w = r.words.indexOf(word);
      if (w < 0) throw new Error(`no expected response to ${JSON.stringify(word)}: not among the ${r.words.length} most frequent words`);
      const spec = r.matrix, q = A[spec.array], units = q.length / r.words.length, step = (spec.hi - spec.lo) / spec.levels;
      scores = [];
      for (let u = 0; u < units; u++) scores.push({ unit: u, score: spec.lo + q[w * units + u] * step });
      scores.sort((x, y) => y.score - x.score);
    } else if (by === "hellinger") {
      scores = hellingerRank(model, layer, field, input, output);
    } else if (by === "saturation") {
      const s = L.saturation[gate];
      if (!s) throw new Error(`gate must be one of ${GATES}`);
      scores = s.below.map((b, u) => ({ unit: u, score: b + s.above[u], below: b, above: s.above[u] }));
      scores.sort((x, y) => y.score - x.score);
    } else if (by === "difference") {
      if (!sameTokens(model, other)) throw new Error("the two models read different tokens: no step-by-step difference");
      const units = L.units[field];
      if (layerOf(other, layer).units[field] !== units) throw new Error("the two layers have different numbers of units");
      const sums = new Float64Array(units);
      let steps = 0;
      for (const n of H.tracked) {
        const a = track(model, layer, field, n), b = track(other, layer, field, n);
        for (let t = 0; t < a.steps; t++) for (let u = 0; u < units; u++) sums[u] += Math.abs(b.get(t, u) - a.get(t, u));
        steps += a.steps;
      }
      scores = Array.from(sums, (s, u) => ({ unit: u, score: s / Math.max(steps, 1) }));
      scores.sort((x, y) => y.score - x.score);
    } else throw new Error(`search by must be one of id, word, hellinger, saturation, difference; got ${by}`);
    return scores.slice(0, top);
  }

  /** The units and gates of layer `layer` that changed most from step t-1 to t of text n (|x_t - x_{t-1}|). */
  function changes(m, layer, n, t, top = 10) {
    const out = [];
    for (const field of FIELDS) {
      const tr = track(m, layer, field, n);
      if (!tr) return [];
      for (let u = 0; u < tr.units; u++) {
        const before = t > 0 ? tr.get(t - 1, u) : 0;
        out.push({ field, unit: u, before, after: tr.get(t, u), change: tr.get(t, u) - before });
      }
    }
    return out.sort((a, b) => Math.abs(b.change) - Math.abs(a.change)).slice(0, top);
  }

  function stepSaturation(m, layer, n) {
    const per = [];
    const trs = GATES.map((g) => track(m, layer, g, n));
    if (trs.some((x) => !x)) return null;
    for (let t = 0; t < trs[0].steps; t++) {
      let s = 0, c = 0;
      for (const tr of trs) for (let u = 0; u < tr.units; u++) { const v = tr.get(t, u); s += v < 0.1 || v > 0.9 ? 1 : 0; c++; }
      per.push(s / c);
    }
    return per;
  }

  // ------------------------------------------------------------------------------------- colours
  function mix(stops, x) {
    x = Math.min(Math.max(x, 0), 1) * (stops.length - 1);
    const i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
  }
  // 256 colours per palette, looked up per cell: interpolating the stops per cell dominated drawing.
  const lookup = (stops) => Array.from({ length: 256 }, (_, k) => mix(stops, k / 255));
  const DIVERGING_LUT = lookup(DIVERGING), SEQUENTIAL_LUT = lookup(SEQUENTIAL);
  const pick = (lut, x) => lut[Math.round(Math.min(Math.max(x, 0), 1) * 255)];
  function scaleFor(field, lo, hi, diff) {
    if (diff || field === "c" || field === "h" || field === "g") {
      const m = Math.max(Math.abs(lo), Math.abs(hi), 1e-12);
      return { kind: "diverging", lo: -m, hi: m, colour: (v) => pick(DIVERGING_LUT, (v + m) / (2 * m)) };
    }
    return { kind: "sequential", lo: 0, hi: 1, colour: (v) => pick(SEQUENTIAL_LUT, v) };
  }
  const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;

  // ------------------------------------------------------------------------------------- state
  const state = { view: "corpus", text: null, layer: null, fields: FIELDS.slice(), diff: false, a: 0, b: 1, t: 0,
    span: null, threshold: 0.5, matchField: "h", unit: null, cluster: null, sort: null, filter: "", row: 0 };
  const ui = { heatmaps: [], timings: {} };

  function writeHash() {
    const keys = ["view", "text", "layer", "diff", "a", "b", "t", "unit", "threshold", "matchField", "filter"];
    const parts = keys.filter((k) => state[k] !== null && state[k] !== "" && state[k] !== false).map((k) => `${k}=${encodeURIComponent(state[k])}`);
    if (state.span) parts.push(`span=${state.span[0]}-${state.span[1]}`);
    if (state.fields.length !== FIELDS.length) parts.push(`fields=${state.fields.join("")}`);
    history.replaceState(null, "", "#" + parts.join("&"));
  }
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const int = (k) => (params.has(k) ? parseInt(params.get(k), 10) : null);
    if (VIEWS.includes(params.get("view"))) state.view = params.get("view");
    for (const k of ["text", "a", "b", "t", "unit"]) if (int(k) !== null && !Number.isNaN(int(k))) state[k] = int(k);
    if (params.has("layer") && H.models[0].layers.some((l) => l.key === params.get("layer"))) state.layer = params.get("layer");
    if (params.get("diff") === "true") state.diff = true;
    if (params.has("threshold")) state.threshold = parseFloat(params.get("threshold"));
    if (FIELDS.includes(params.get("matchField"))) state.matchField = params.get("matchField");
    if (params.has("filter")) state.filter = params.get("filter");
    if (params.has("fields")) state.fields = FIELDS.filter((f) => params.get("fields").includes(f));
    if (params.has("span")) { const [s, e] = params.get("span").split("-").map(Number); state.span = [s, e]; }
    state.a = Math.min(state.a, H.models.length - 1);
    state.b = Math.min(state.b, H.models.length - 1);
  }

  // ------------------------------------------------------------------------------- small helpers
  function download(name, href) {
    const a = el("a", { href, download: name });
    document.body.append(a); a.click(); a.remove();
  }
  function csvButton(name, rows) {
    return el("button", { class: "button", title: "export as CSV", onclick: () => {
      const text = rows().map((r) => r.map((c) => { const s = String(c ?? ""); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; }).join(",")).join("\n");
      download(name + ".csv", URL.createObjectURL(new Blob([text], { type: "text/csv" })));
    } }, "CSV");
  }
  function pngButton(name, canvas) {
    return el("button", { class: "button", title: "export as PNG", onclick: () => download(name + ".png", canvas.toDataURL("image/png")) }, "PNG");
  }
  function panel(title, body, extra) {
    return el("div", { class: "panel" }, el("div", { class: "title" }, el("span", {}, title), el("span", {}, extra || [])), body);
  }
  const tooltip = () => $("#tooltip");
  function showTip(x, y, text) { const t = tooltip(); t.textContent = text; t.hidden = false; t.style.left = x + 12 + "px"; t.style.top = y + 12 + "px"; }
  function hideTip() { tooltip().hidden = true; }
  function layerKeys() { return H.models[0].layers.map((l) => l.key); }
  function sideOfLayer(key) { return layerOf(0, key).side; }
  function metricLabel(m) { return H.models[m].metric; }

  // ------------------------------------------------------------------------------------ controls
  function renderControls() {
    const c = $("#controls");
    c.textContent = "";
    const modelSelect = (k) => el("select", { "aria-label": `model ${k.toUpperCase()}`, onchange: (e) => { state[k] = +e.target.value; render(); } },
      H.models.map((m, i) => el("option", { value: i, selected: state[k] === i }, m.name)));
    c.append(
      el("label", {}, "layer ", el("select", { id: "layer-select", onchange: (e) => { state.layer = e.target.value; render(); } },
        layerKeys().map((k) => el("option", { value: k, selected: state.layer === k }, `${k} (${sideOfLayer(k)})`)))),
      el("label", {}, "A ", modelSelect("a")),
      el("label", {}, "B ", modelSelect("b")),
      el("label", { title: "show B - A beside the models" }, el("input", { type: "checkbox", id: "diff-toggle", checked: state.diff, onchange: (e) => { state.diff = e.target.checked; render(); } }), " B − A"),
      el("span", {}, "fields ", FIELDS.map((f) => el("label", {}, el("input", { type: "checkbox", checked: state.fields.includes(f), onchange: (e) => {
        state.fields = FIELDS.filter((x) => (x === f ? e.target.checked : state.fields.includes(x))); render();
      } }), f + " "))),
    );
  }

  // ---------------------------------------------------------------------------------- corpus view
  function corpusColumns() {
    const cols = [{ name: "#", get: (n) => n, num: true, width: "50px" }, { name: "text", get: (n) => H.texts[n], width: "minmax(240px, 4fr)" },
      { name: "steps", get: (n) => tokens(0, H.sides[H.sides.length - 1], n).length, num: true, width: "60px" }];
    H.models.forEach((m, i) => {
      cols.push({ name: `${m.name} ${m.metric}`, get: (n) => m.values[n], num: true, width: "1fr", model: i });
      cols.push({ name: `${m.name} saturation`, get: (n) => m.saturation[n], num: true, width: "1fr", model: i });
      if (m.attribution) cols.push({ name: `${m.name} IG top-1`, get: (n) => (n < m.attribution.texts ? m.attribution.top1_share[n] : null), num: true, width: "1fr", model: i });
      const informed = informedLayers(i);
      if (informed.length) {
        // one column per model: the chosen layer's where it holds per-word information, else its first such layer
        const key = informed.includes(state.layer) ? state.layer : informed[0];
        cols.push({ name: `${m.name} H spread ${key}`, get: (n) => (n < m.information.texts ? m.information.layers[key].spread[n] : null), num: true, width: "1fr", model: i });
      }
    });
    return cols;
  }
  function corpusRows() {
    const words = state.filter.trim().toLowerCase().split(/\s+/).filter(Boolean);
    let rows = H.texts.map((_, n) => n);
    if (words.length) {
      rows = rows.filter((n) => {
        const all = H.sides.flatMap((s) => tokens(0, s, n)).map((t) => t.toLowerCase());
        const text = H.texts[n].toLowerCase();
        return words.every((w) => all.includes(w) || text.includes(w));
      });
    }
    if (state.sort) {
      const col = corpusColumns()[state.sort.column];
      const key = (n) => { const v = col.get(n); return v === null || v === undefined ? (col.num ? -Infinity : "") : v; };
      rows.sort((x, y) => { const a = key(x), b = key(y); return (a < b ? -1 : a > b ? 1 : x - y) * state.sort.direction; });
    }
    return rows;
  }
  function renderCorpus(root) {
    const cols = corpusColumns();
    const rows = corpusRows();
    ui.corpusRows = rows;
    const template = cols.map((c) => c.width).join(" ");
    const wrap = el("div", { class: "table-wrap", id: "corpus-table", tabindex: 0, role: "grid", "aria-rowcount": rows.length });
    const head = el("div", { class: "vrow head", style: `grid-template-columns:${template}` }, cols.map((c, i) =>
      el("span", { class: c.num ? "num" : "", role: "columnheader", title: `${c.name}: click to sort`, onclick: () => {
        state.sort = state.sort && state.sort.column === i ? { column: i, direction: -state.sort.direction } : { column: i, direction: c.num ? -1 : 1 };
        render();
      } }, c.name + (state.sort && state.sort.column === i ? (state.sort.direction > 0 ? " ▲" : " ▼") : ""))));
    const ROW = 24;
    const body = el("div", { class: "vtable", style: `height:${rows.length * ROW}px; top:${ROW}px` });
    wrap.append(head, body);
    const draw = () => {
      const first = Math.max(0, Math.floor(wrap.scrollTop / ROW) - 5);
      const last = Math.min(rows.length, first + Math.ceil(wrap.clientHeight / ROW) + 10);
      body.textContent = "";
      for (let k = first; k < last; k++) {
        const n = rows[k];
        body.append(el("div", { class: "vrow" + (k === state.row ? " selected" : ""), role: "row", "data-text": n,
          style: `grid-template-columns:${template}; position:absolute; top:${k * ROW}px; left:0; right:0`,
          onclick: () => openText(n) }, cols.map((c) => {
          const v = c.get(n);
          return el("span", { class: c.num ? "num" : "", title: c.num ? null : v }, typeof v === "number" && c.name !== "#" && c.name !== "steps" ? fmt(v) : v ?? "–");
        })));
      }
    };
    wrap.addEventListener("scroll", draw);
    ui.drawCorpus = draw;
    const filter = el("input", { id: "corpus-filter", type: "search", placeholder: "filter by word ( / )", value: state.filter, oninput: (e) => {
      state.filter = e.target.value; state.row = 0; renderBody(); $("#corpus-filter").focus();
    } });
    root.append(el("div", { class: "row" }, filter, el("span", { class: "muted" }, `${rows.length} of ${H.texts.length} texts`),
      csvButton("corpus", () => [cols.map((c) => c.name), ...rows.map((n) => cols.map((c) => c.get(n)))])), wrap);
    requestAnimationFrame(() => { wrap.scrollTop = Math.max(0, (state.row - 5) * ROW); draw(); });
  }

  // ------------------------------------------------------------------------------------ text view
  function openText(n) { state.text = n; state.t = 0; state.span = null; state.view = "text"; render(); }

  function heatmap(spec) {
    // spec: {id, title, steps, units, get(t,u), scale, tokens, onpick(t,u)}
    const cw = Math.max(10, Math.min(22, Math.floor(560 / Math.max(spec.steps, 1))));
    const rh = Math.max(2, Math.min(10, Math.floor(360 / Math.max(spec.units, 1))));
    const canvas = el("canvas", { width: spec.steps * cw, height: spec.units * rh, "data-heatmap": spec.id, "aria-label": spec.title });
    const g = canvas.getContext("2d");
    // One pixel per cell, then scaled up without smoothing: filling every screen pixel in JS cost
    // cw * rh times as much (a few hundred ms per text of a 1,000-unit model).
    const cells = document.createElement("canvas");
    cells.width = spec.steps; cells.height = spec.units;
    const img = new ImageData(spec.steps, spec.units);
    for (let t = 0; t < spec.steps; t++) for (let u = 0; u < spec.units; u++) {
      const rgb = spec.scale.colour(spec.get(t, u)), p = (u * spec.steps + t) * 4;
      img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255;
    }
    cells.getContext("2d").putImageData(img, 0, 0);
    const draw = () => {  // the cells and the cursors of the current step and unit
      g.imageSmoothingEnabled = false;
      g.drawImage(cells, 0, 0, canvas.width, canvas.height);
      if (state.t !== null && state.t < spec.steps) { g.strokeStyle = "#e08a00"; g.lineWidth = 2; g.strokeRect(state.t * cw + 1, 1, cw - 2, canvas.height - 2); }
      if (state.unit !== null && state.unit < spec.units) { g.strokeStyle = "#000"; g.lineWidth = 1; g.strokeRect(0.5, state.unit * rh + 0.5, canvas.width - 1, rh - 1); }
    };
    draw();
    const cell = (e) => { const r = canvas.getBoundingClientRect(); return [Math.floor((e.clientX - r.left) / cw), Math.floor((e.clientY - r.top) / rh)]; };
    canvas.addEventListener("mousemove", (e) => {
      const [t, u] = cell(e);
      if (t < 0 || t >= spec.steps || u < 0 || u >= spec.units) return hideTip();
      showTip(e.clientX, e.clientY, `${spec.title}\nstep ${t} ${JSON.stringify(spec.tokens[t])}, unit ${u}\nvalue ${spec.get(t, u).toFixed(4)}`);
    });
    canvas.addEventListener("mouseleave", hideTip);
    canvas.addEventListener("click", (e) => { const [t, u] = cell(e); spec.onpick(t, u); });
    ui.heatmaps.push({ id: spec.id, canvas, cw, rh, steps: spec.steps, units: spec.units, draw });
    const labels = tokenLabels(spec.tokens, spec.steps, cw);
    return panel(spec.title, el("div", {}, labels, canvas), pngButton(spec.id, canvas));
  }

  // The tokens above a heatmap, slanted, drawn on one canvas: a rotated element per token cost
  // more layout and paint than the heatmaps themselves (12 heatmaps x 60 tokens on a text view).
  function tokenLabels(toks, steps, cw) {
    const canvas = el("canvas", { class: "labels", width: steps * cw, height: 44, "aria-label": toks.join(" ") });
    const g = canvas.getContext("2d");
    g.font = "10px sans-serif"; g.fillStyle = "#333";
    for (let t = 0; t < steps; t++) {
      g.save(); g.translate(t * cw + cw / 2 + 3, 42); g.rotate(-50 * Math.PI / 180);
      g.fillText(String(toks[t]).slice(0, 12), 0, 0); g.restore();
    }
    return canvas;
  }

  function strip(title, values, scale, toks, format) {
    const cw = Math.max(10, Math.min(22, Math.floor(560 / Math.max(values.length, 1))));
    const canvas = el("canvas", { width: values.length * cw, height: 12, "aria-label": title });
    const g = canvas.getContext("2d");
    values.forEach((v, t) => { g.fillStyle = v === null || Number.isNaN(v) ? "#eee" : css(scale.colour(v)); g.fillRect(t * cw, 0, cw, 12); });
    canvas.addEventListener("mousemove", (e) => { const t = Math.floor((e.clientX - canvas.getBoundingClientRect().left) / cw); if (t >= 0 && t < values.length) showTip(e.clientX, e.clientY, `${title}\nstep ${t} ${JSON.stringify(toks[t])}: ${(format || ((v) => fmt(v, 4)))(values[t])}`); });
    canvas.addEventListener("mouseleave", hideTip);
    return el("div", { class: "row", style: "gap:6px;align-items:center" }, el("span", { class: "muted", style: "width:130px;font-size:11px" }, title), canvas);
  }

  function clusterWords() {
    if (!state.cluster) return null;
    const { model, layer, id } = state.cluster;
    const r = layerOf(model, layer).responses.h;
    return new Set(r.words.filter((_, w) => r.word_clusters[w] === id));
  }

  function renderText(root) {
    if (state.text === null) { root.append(el("p", { class: "muted" }, "Choose a text in the corpus table (Enter or click), or press → here.")); state.text = 0; }
    const n = state.text, key = state.layer, side = sideOfLayer(key);
    const toks = tokens(0, side, n);
    if (state.t >= toks.length) state.t = toks.length - 1;
    const highlight = clusterWords();
    const sentence = el("div", { class: "sentence", id: "sentence", "aria-label": "tokens of the text" }, toks.map((tok, t) =>
      el("span", { class: "token" + (t === state.t ? " current" : "") + (state.span && t >= state.span[0] && t <= state.span[1] ? " span" : "") + (highlight && highlight.has(tok) ? " cluster" : ""),
        tabindex: t === state.t ? 0 : -1, "data-step": t, onclick: (e) => pickStep(t, e.shiftKey) }, tok)));
    const otherSides = H.sides.filter((s) => s !== side).map((s) => el("div", { class: "muted" }, `${s}: ${tokens(0, s, n).join(" ")}`));
    root.append(el("h2", {}, `Text ${n}`), el("div", { class: "muted" }, H.texts[n]), ...otherSides, sentence,
      el("div", { class: "muted", style: "font-size:12px" }, "click a token: what changed at that step; shift-click: select a span for select & match; ←/→ move, ↑/↓ unit"));
    H.models.forEach((m, i) => {
      const strips = [];
      const sat = stepSaturation(i, key, n);
      if (sat) strips.push(strip(`${m.name}: saturation`, sat, { colour: (v) => mix(SEQUENTIAL, v) }, toks));
      const loss = side === H.sides[H.sides.length - 1] && m.token_loss.offsets[n + 1] > m.token_loss.offsets[n] ? Array.from(perText(m.token_loss, n)) : null;
      if (loss) strips.push(strip(`${m.name}: token loss`, loss, { colour: (v) => mix(SEQUENTIAL, v / Math.max(...loss, 1e-9)) }, toks));
      if (m.attribution && n < m.attribution.texts && m.attribution.scores[side]) {
        const s = Array.from(perText(m.attribution.scores[side], n));
        const mx = Math.max(...s.map(Math.abs), 1e-12);
        strips.push(strip(`${m.name}: IG`, s, { colour: (v) => mix(DIVERGING, (v / mx + 1) / 2) }, toks));
      }
      for (const layer of informedLayers(i, side)) {
        const sigma = informationOf(i, layer, n);
        if (!sigma) continue;
        // As the report's view: log sigma about the text's mean, red where the layer kept the word (small sigma)
        const logs = sigma.map(Math.log), mean = logs.reduce((a, b) => a + b, 0) / logs.length;
        const mx = Math.max(...logs.map((v) => Math.abs(v - mean)), 1e-12);
        strips.push(strip(`${m.name}: σ ${layer}`, sigma, { colour: (v) => mix(DIVERGING, (1 - (Math.log(v) - mean) / mx) / 2) }, toks, sig));
      }
      if (informedLayers(i, side).length && informationOf(i, informedLayers(i, side)[0], n))
        strips.push(el("div", { class: "muted", style: "font-size:11px" }, "σ: per-word information, red where the layer kept the word (small σ: it tolerates little noise), blue where it did not; white: the text's mean log σ"));
      if (strips.length) root.append(panel(`${m.name}: per token`, el("div", {}, strips)));
    });
    if (!isTracked(n)) { root.append(el("p", { class: "warn" }, `Text ${n} has no full tracks in this page (${H.tracked.length} texts do: the budget). Its aggregates are in the corpus table.`)); return; }
    const models = [state.a, state.b].filter((m, k, all) => all.indexOf(m) === k);
    const canDiff = state.diff && state.a !== state.b && sameTokens(state.a, state.b);
    if (state.diff && !canDiff) root.append(el("p", { class: "warn" }, "B − A needs two different models that read the same tokens."));
    const grid = el("div", { class: "row", style: "gap:24px" });
    for (const field of state.fields) {
      const row = el("div", { class: "row", style: "gap:6px" });
      const tracks = models.map((m) => track(m, key, field, n));
      let lo = Infinity, hi = -Infinity;
      tracks.forEach((tr) => { for (let t = 0; t < tr.steps; t++) for (let u = 0; u < tr.units; u++) { const v = tr.get(t, u); lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      const scale = scaleFor(field, lo, hi, false);
      models.forEach((m, k) => row.append(heatmap({ id: `${H.models[m].name}-${field}`, title: `${H.models[m].name} ${key} ${field}`, steps: tracks[k].steps, units: tracks[k].units,
        get: tracks[k].get, scale, tokens: toks, onpick: (t, u) => { state.unit = u; pickStep(t, false); } })));
      if (canDiff && tracks[0].units === tracks[1].units) {
        const [ta, tb] = tracks;
        const get = (t, u) => tb.get(t, u) - ta.get(t, u);
        let m = 0;
        for (let t = 0; t < ta.steps; t++) for (let u = 0; u < ta.units; u++) m = Math.max(m, Math.abs(get(t, u)));
        row.append(heatmap({ id: `diff-${field}`, title: `B − A: ${H.models[state.b].name} − ${H.models[state.a].name} ${field}`, steps: ta.steps, units: ta.units, get,
          scale: scaleFor(field, -m, m, true), tokens: toks, onpick: (t, u) => { state.unit = u; pickStep(t, false); } }));
      }
      grid.append(el("div", {}, el("h3", {}, field), row));
    }
    root.append(grid, legend());
    root.append(el("div", { id: "step-panel" }, stepPanel()));
  }

  /** A new step or span in the text view: cursors, token marks and the step panel, not a re-render. */
  function updateStep() {
    document.querySelectorAll("#sentence .token").forEach((e) => {
      const t = +e.dataset.step;
      e.classList.toggle("current", t === state.t);
      e.classList.toggle("span", !!state.span && t >= state.span[0] && t <= state.span[1]);
      e.tabIndex = t === state.t ? 0 : -1;
    });
    ui.heatmaps.forEach((h) => h.draw());
    $("#step-panel").replaceChildren(stepPanel());
    writeHash();
  }

  function legend() {
    const bar = (stops) => { const c = el("canvas", { width: 120, height: 10 }); const g = c.getContext("2d"); for (let x = 0; x < 120; x++) { g.fillStyle = css(mix(stops, x / 119)); g.fillRect(x, 0, 1, 10); } return c; };
    return el("div", { class: "legend" }, el("span", {}, "gates i, f, o: 0 "), bar(SEQUENTIAL), el("span", {}, " 1"), el("span", {}, "  h, c, g, B − A: −max "), bar(DIVERGING), el("span", {}, " +max (per panel row)"));
  }

  function stepPanel() {
    const n = state.text, t = state.t, key = state.layer;
    const side = sideOfLayer(key);
    const body = el("div", { class: "row", id: "step-details" });
    H.models.forEach((m, i) => {
      const rows = changes(i, key, n, t, 12);
      const ig = m.attribution && n < m.attribution.texts && m.attribution.scores[side] ? perText(m.attribution.scores[side], n)[t] : null;
      const information = informedLayers(i, side).map((layer) => {
        const sigma = informationOf(i, layer, n);
        if (!sigma) return null;
        const rank = 1 + sigma.filter((v) => v < sigma[t]).length;
        return el("div", { class: "muted", "data-information": layer }, `per-word information, ${layer}: σ ${sig(sigma[t])}, H ${fmt(entropyOf(i, layer, sigma[t]), 2)} nats; rank ${rank} of ${sigma.length} tokens by σ (1: kept most)`);
      }).filter(Boolean);
      body.append(el("div", {}, el("h3", {}, `${m.name}` + (ig !== null ? ` (IG of this token ${fmt(ig, 4)})` : "")), information,
        el("table", { class: "plain" }, el("tr", {}, el("th", {}, "field"), el("th", {}, "unit"), el("th", {}, "before"), el("th", {}, "after"), el("th", {}, "change")),
          rows.map((r) => el("tr", { class: "clickable", onclick: () => { state.unit = r.unit; state.view = "units"; ui.unitField = r.field; render(); } },
            el("td", {}, r.field), el("td", {}, r.unit), el("td", { class: "num" }, fmt(r.before)), el("td", { class: "num" }, fmt(r.after)), el("td", { class: "num" }, fmt(r.change)))))));
    });
    return panel(`What changed most at step ${t} (${JSON.stringify(tokens(0, side, n)[t])}), ${key}: |x_t − x_(t−1)|`, body);
  }

  function pickStep(t, extend) {
    if (extend) {
      const a = state.span ? state.span[0] : state.t;
      state.span = [Math.min(a, t), Math.max(a, t)];
    } else state.span = null;
    state.t = t;
    if (state.view === "text" && $("#step-panel")) updateStep(); else render();
    const cur = $("#sentence .token.current");
    if (cur) cur.focus({ preventScroll: true });
  }

  // ----------------------------------------------------------------------------------- gates view
  function scatter(title, series, xLabel, yLabel) {
    const W = 260, P = 30;
    const c = el("canvas", { width: W + P, height: W + P, "aria-label": title });
    const g = c.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, W + P, W + P);
    g.strokeStyle = "#999"; g.strokeRect(P, 0, W, W);
    g.fillStyle = "#333"; g.font = "11px sans-serif"; g.fillText(xLabel, P + 4, W + 20); g.save(); g.translate(12, W - 4); g.rotate(-Math.PI / 2); g.fillText(yLabel, 0, 0); g.restore();
    g.fillText("0", P - 10, W + 12); g.fillText("1", P + W - 6, W + 12); g.fillText("1", P - 10, 10);
    series.forEach((s, k) => { g.fillStyle = s.colour; g.globalAlpha = 0.7; s.points.forEach(([x, y]) => { if (k % 2) g.fillRect(P + x * W - 2, W - y * W - 2, 4, 4); else { g.beginPath(); g.arc(P + x * W, W - y * W, 2.2, 0, 2 * Math.PI); g.fill(); } }); });
    g.globalAlpha = 1;
    return c;
  }
  function lines(title, series, xs, xLabel) {
    const W = 300, Hh = 160, P = 30;
    const c = el("canvas", { width: W + P, height: Hh + P, "aria-label": title });
    const g = c.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, W + P, Hh + P); g.strokeStyle = "#999"; g.strokeRect(P, 0, W, Hh);
    const max = Math.max(1e-12, ...series.flatMap((s) => s.values));
    const [x0, x1] = [xs[0], xs[xs.length - 1]];
    series.forEach((s) => { g.strokeStyle = s.colour; g.setLineDash(s.dash || []); g.beginPath(); s.values.forEach((v, k) => { const x = P + (x1 > x0 ? (xs[k] - x0) / (x1 - x0) : 0) * W, y = Hh - (v / max) * Hh; k ? g.lineTo(x, y) : g.moveTo(x, y); }); g.stroke(); });
    g.setLineDash([]); g.fillStyle = "#333"; g.font = "11px sans-serif"; g.fillText(xLabel, P + 4, Hh + 20); g.fillText(fmt(max, 2), 0, 10);
    return c;
  }
  function modelLegend() { return el("div", { class: "legend" }, H.models.map((m, i) => el("span", {}, el("span", { class: "swatch", style: `background:${MODEL_COLOURS[i]}` }), m.name))); }

  function renderGates(root) {
    const key = state.layer;
    root.append(el("h2", {}, `Gate saturation per unit, ${key} (Karpathy et al. 2015), over all ${H.texts.length} texts`), modelLegend());
    const row = el("div", { class: "row" });
    for (const gate of GATES) {
      const series = H.models.map((m, i) => { const s = layerOf(i, key).saturation[gate]; return { colour: MODEL_COLOURS[i], points: s.below.map((b, u) => [b, s.above[u]]) }; });
      const c = scatter(`${gate} saturation`, series, "share of steps < 0.1", "share > 0.9");
      row.append(panel(`gate ${gate}: one point per unit`, c, [pngButton(`saturation-${gate}`, c), csvButton(`saturation-${gate}`, () => [["model", "unit", "below_0.1", "above_0.9"], ...H.models.flatMap((m, i) => layerOf(i, key).saturation[gate].below.map((b, u) => [m.name, u, b, layerOf(i, key).saturation[gate].above[u]]))])]));
    }
    root.append(row, el("h2", {}, "Histograms of the gate values (all texts)"));
    const hrow = el("div", { class: "row" });
    for (const gate of ["i", "f", "g", "o"]) {
      const bins = layerOf(0, key).histograms[gate].length, lo = gate === "g" ? -1 : 0;
      const xs = Array.from({ length: bins }, (_, k) => lo + ((k + 0.5) * (1 - lo)) / bins);
      const series = H.models.map((m, i) => { const h = layerOf(i, key).histograms[gate]; const total = h.reduce((a, b) => a + b, 0) || 1; return { colour: MODEL_COLOURS[i], values: h.map((x) => x / total) }; });
      const c = lines(`histogram ${gate}`, series, xs, `${gate} from ${lo} to 1 (share of values per bin)`);
      hrow.append(panel(`gate ${gate}`, c, pngButton(`histogram-${gate}`, c)));
    }
    root.append(hrow, el("h2", {}, "Saturation over training (the run folder's metrics.jsonl)"));
    const trow = el("div", { class: "row" });
    H.models.forEach((m, i) => {
      if (!m.training.length) { trow.append(el("p", { class: "muted" }, `${m.name}: no metrics.jsonl with gate records beside ${m.path}`)); return; }
      const steps = m.training.map((r) => r.step);
      const series = [];
      ["input", "forget", "output"].forEach((g, k) => {
        series.push({ colour: MODEL_COLOURS[k + 1], values: m.training.map((r) => r.pooled[`${g}_share_above_0.9`] ?? 0) });
        series.push({ colour: MODEL_COLOURS[k + 1], dash: [4, 3], values: m.training.map((r) => r.pooled[`${g}_share_below_0.1`] ?? 0) });
      });
      const c = lines(`${m.name} training`, series, steps, "training step; solid > 0.9, dashed < 0.1; i blue-green, f red, o pink");
      trow.append(panel(`${m.name}: pooled over layers`, c, pngButton(`training-${m.name}`, c)));
    });
    root.append(trow);
  }

  // ----------------------------------------------------------------------------------- match view
  function renderMatch(root) {
    const key = state.layer;
    root.append(el("h2", {}, "Select and match (LSTMVis)"),
      el("p", { class: "muted" }, "In the text view, shift-click two tokens to select a span. The units whose value stays at or above the threshold through the span are 'on'; every window of the same length in the tracked texts is ranked by the Jaccard similarity of its on-set with the span's. Computed here, in the browser."));
    const controls = el("div", { class: "row" },
      el("label", {}, "model ", el("select", { id: "match-model", onchange: (e) => { state.a = +e.target.value; render(); } }, H.models.map((m, i) => el("option", { value: i, selected: state.a === i }, m.name)))),
      el("label", {}, "field ", el("select", { id: "match-field", onchange: (e) => { state.matchField = e.target.value; render(); } }, FIELDS.map((f) => el("option", { value: f, selected: state.matchField === f }, f)))),
      el("label", {}, "threshold ", el("input", { id: "match-threshold", type: "number", step: "0.05", value: state.threshold, onchange: (e) => { state.threshold = parseFloat(e.target.value); render(); } })));
    root.append(controls);
    if (state.text === null || !state.span) { root.append(el("p", {}, "No span selected yet.")); return; }
    if (!isTracked(state.text)) { root.append(el("p", { class: "warn" }, "The selected text has no full track.")); return; }
    const side = sideOfLayer(key);
    const t0 = performance.now();
    const result = selectAndMatch({ model: state.a, layer: key, field: state.matchField, text: state.text, start: state.span[0], end: state.span[1], threshold: state.threshold, top: 30 });
    ui.timings.match = performance.now() - t0;
    ui.lastMatch = result;
    const phrase = tokens(state.a, side, state.text).slice(state.span[0], state.span[1] + 1).join(" ");
    root.append(el("p", { id: "match-units" }, `${H.models[state.a].name} ${key} ${state.matchField} ≥ ${state.threshold} throughout "${phrase}": ${result.units.length} units on: ${result.units.join(", ") || "none"}`));
    const table = el("table", { class: "plain", id: "match-results" }, el("tr", {}, el("th", {}, "text"), el("th", {}, "steps"), el("th", {}, "score"), el("th", {}, "context")),
      result.matches.map((m) => { const tk = tokens(state.a, side, m.text); return el("tr", { class: "clickable", onclick: () => { state.text = m.text; state.span = [m.start, m.end]; state.t = m.start; state.view = "text"; render(); } },
        el("td", {}, m.text), el("td", {}, `${m.start}–${m.end}`), el("td", { class: "num" }, fmt(m.score)),
        el("td", { class: "ctx" }, tk.slice(Math.max(0, m.start - 3), m.start).join(" ") + " ", el("b", {}, tk.slice(m.start, m.end + 1).join(" ")), " " + tk.slice(m.end + 1, m.end + 4).join(" "))); }));
    root.append(panel("best matching windows", table, csvButton("matches", () => [["text", "start", "end", "score"], ...result.matches.map((m) => [m.text, m.start, m.end, m.score])])));
  }

  // ----------------------------------------------------------------------------------- units view
  function renderUnits(root) {
    const key = state.layer;
    const field = ui.unitField || "h";
    const by = ui.searchBy || "id";
    const form = el("form", { class: "row", id: "unit-search", onsubmit: (e) => { e.preventDefault(); const f = new FormData(e.target); ui.search = Object.fromEntries(f.entries()); ui.searchBy = ui.search.by; ui.unitField = ui.search.field; render(); } },
      el("label", {}, "by ", el("select", { name: "by", id: "search-by" }, ["id", "word", "hellinger", "saturation", "difference"].map((b) => el("option", { value: b, selected: b === by }, b)))),
      el("label", {}, "field ", el("select", { name: "field" }, FIELDS.map((f) => el("option", { value: f, selected: f === field }, f)))),
      el("input", { name: "query", id: "search-query", placeholder: "unit id | word | input->output | gate (i/f/o)", value: (ui.search && ui.search.query) || "" , size: 28 }),
      el("button", { class: "button", type: "submit" }, "search"));
    root.append(el("h2", {}, `Units of ${key}`), form, el("p", { class: "muted" }, "id: a unit number; word: the units whose expected response (mean update of h) to the word is largest; hellinger: input->output (e.g. a->b), the units whose values at steps reading the input best separate that output from the others (tracked texts); saturation: a gate; difference: mean |B − A| over the tracked steps."));
    if (ui.search) {
      let results;
      try {
        const q = ui.search.query.trim();
        const args = { by: ui.search.by, model: state.a, other: state.b, layer: key, field: ui.search.field, top: 30 };
        if (args.by === "id") args.unit = parseInt(q, 10);
        if (args.by === "word") args.word = q;
        if (args.by === "hellinger") [args.input, args.output] = q.split("->");
        if (args.by === "saturation") args.gate = q || "f";
        const t0 = performance.now();
        results = searchUnits(args);
        ui.timings.search = performance.now() - t0;
      } catch (error) { root.append(el("p", { class: "warn", id: "search-error" }, String(error.message))); results = []; }
      ui.lastSearch = results;
      if (results.length) root.append(panel("results", el("table", { class: "plain", id: "search-results" }, el("tr", {}, el("th", {}, "rank"), el("th", {}, "unit"), el("th", {}, "score")),
        results.map((r, k) => el("tr", { class: "clickable", onclick: () => { state.unit = r.unit; render(); } }, el("td", {}, k + 1), el("td", {}, r.unit), el("td", { class: "num" }, r.score === null ? "" : fmt(r.score, 4))))),
        csvButton("units", () => [["rank", "unit", "score"], ...results.map((r, k) => [k + 1, r.unit, r.score])])));
    }
    if (state.unit !== null) root.append(unitPage(key, field, state.unit));
  }

  function unitPage(key, field, unit) {
    const body = el("div", { id: "unit-page" });
    H.models.forEach((m, i) => {
      const L = layerOf(i, key);
      if (unit >= L.units[field]) return;
      const side = L.side;
      const positions = [];
      const values = [];
      for (const n of H.tracked) { const tr = track(i, key, field, n); for (let t = 0; t < tr.steps; t++) { const v = tr.get(t, unit); values.push(v); positions.push([v, n, t]); } }
      positions.sort((a, b) => b[0] - a[0]);
      const lo = Math.min(...values), hi = Math.max(...values);
      const scale = scaleFor(field, lo, hi, false);
      const contexts = positions.slice(0, 8).map(([v, n, t]) => {
        const tr = track(i, key, field, n), tk = tokens(i, side, n);
        const from = Math.max(0, t - 5), to = Math.min(tk.length, t + 4);
        return el("div", { class: "ctx" }, el("span", { class: "muted" }, `text ${n} step ${t} (${fmt(v)}): `), tk.slice(from, to).map((tok, k) => {
          const c = scale.colour(tr.get(from + k, unit)), dark = c[0] * 0.3 + c[1] * 0.6 + c[2] * 0.1 < 120;
          return el("span", { style: `background:${css(c)};color:${dark ? "#fff" : "#000"}`, title: fmt(tr.get(from + k, unit), 4) }, tok);
        }));
      });
      const bins = 30, counts = new Array(bins).fill(0);
      values.forEach((v) => { counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo || 1)) * bins))]++; });
      const hist = lines(`histogram of unit ${unit}`, [{ colour: MODEL_COLOURS[i], values: counts }], counts.map((_, k) => lo + ((k + 0.5) * (hi - lo)) / bins), `${field} from ${fmt(lo, 2)} to ${fmt(hi, 2)}`);
      const r = L.responses.h;
      let response = null;
      if (r) {
        const q = A[r.matrix.array], units = q.length / r.words.length, step = (r.matrix.hi - r.matrix.lo) / r.matrix.levels;
        const resp = r.words.map((w, k) => [w, r.matrix.lo + q[k * units + unit] * step]).sort((a, b) => b[1] - a[1]);
        const show = (list) => list.map(([w, v]) => el("span", { class: "ctx", style: `background:${css(mix(DIVERGING, (v / Math.max(Math.abs(r.matrix.lo), Math.abs(r.matrix.hi), 1e-12) + 1) / 2))}` }, `${w} ${fmt(v, 3)} `));
        response = el("div", {}, el("div", {}, "most raised: ", show(resp.slice(0, 10))), el("div", {}, "most lowered: ", show(resp.slice(-10).reverse())));
      }
      const sat = GATES.map((g) => `${g} <0.1 ${fmt(L.saturation[g].below[unit], 2)}, >0.9 ${fmt(L.saturation[g].above[unit], 2)}`).join("; ");
      body.append(panel(`${m.name} ${key} unit ${unit} (${field})`, el("div", {}, el("div", { class: "muted" }, `saturation over all texts: ${sat}`),
        el("h3", {}, "top contexts (tracked texts), coloured by the unit's value"), contexts, el("h3", {}, "expected response of h to words (all texts)"), response || "–",
        el("h3", {}, "histogram (tracked texts)"), hist), pngButton(`unit-${unit}-${m.name}`, hist)));
    });
    return body;
  }

  // -------------------------------------------------------------------------------- clusters view
  function renderClusters(root) {
    const key = state.layer;
    root.append(el("h2", {}, `Co-clusters of words and units (RNNVis), ${key}, expected response of h`),
      el("p", { class: "muted" }, "Spectral co-clustering of the positive part of the words x units matrix of mean updates, over all texts. Choose a cluster: its words are underlined in the text view."));
    const row = el("div", { class: "row" });
    H.models.forEach((m, i) => {
      const r = layerOf(i, key).responses.h;
      if (!r) return;
      const ids = [...new Set(r.word_clusters)].filter((c) => c >= 0).sort((a, b) => a - b);
      const box = el("div", { style: "min-width:280px;max-width:460px" }, ids.length ? ids.map((c) => {
        const words = r.words.filter((_, w) => r.word_clusters[w] === c);
        const units = r.unit_clusters.map((x, u) => (x === c ? u : -1)).filter((u) => u >= 0);
        const chosen = state.cluster && state.cluster.model === i && state.cluster.id === c && state.cluster.layer === key;
        return el("div", { class: "panel", style: chosen ? "background:#fff6dc" : "" }, el("button", { class: "button", "data-cluster": `${i}-${c}`, onclick: () => { state.cluster = chosen ? null : { model: i, layer: key, id: c }; render(); } }, `${chosen ? "chosen" : "choose"} cluster ${c}`),
          el("span", { class: "muted" }, ` ${words.length} words, ${units.length} units`), el("div", { class: "ctx" }, words.slice(0, 40).join(" ")));
      }) : el("p", { class: "muted" }, "too few non-zero responses to co-cluster"));
      row.append(panel(m.name, box));
    });
    root.append(row);
  }

  // -------------------------------------------------------------------------------------- render
  function renderBody() {
    const root = $("#views");
    root.textContent = "";
    ui.heatmaps = [];
    const view = el("section", { class: "view", id: `view-${state.view}`, "aria-label": VIEW_NAMES[state.view] });
    root.append(view);
    ({ corpus: renderCorpus, text: renderText, gates: renderGates, match: renderMatch, units: renderUnits, clusters: renderClusters })[state.view](view);
    writeHash();
  }
  function render() {
    const t0 = performance.now();
    $("#tabs").textContent = "";
    VIEWS.forEach((v, k) => $("#tabs").append(el("button", { role: "tab", "aria-selected": v === state.view ? "true" : "false", "data-view": v, title: `key ${k + 1}`, onclick: () => { state.view = v; render(); } }, `${k + 1} ${VIEW_NAMES[v]}`)));
    renderControls();
    renderBody();
    ui.timings.render = performance.now() - t0;
  }

  function onKey(e) {
    if (e.target.matches("input, select, textarea")) { if (e.key === "Escape") e.target.blur(); return; }
    if (e.key >= "1" && e.key <= String(VIEWS.length)) { state.view = VIEWS[+e.key - 1]; render(); e.preventDefault(); return; }
    if (e.key === "/" && state.view === "corpus") { $("#corpus-filter").focus(); e.preventDefault(); return; }
    if (state.view === "corpus" && ["ArrowDown", "ArrowUp", "j", "k", "Enter"].includes(e.key)) {
      const rows = ui.corpusRows;
      if (e.key === "Enter" && rows.length) return openText(rows[state.row]);
      state.row = Math.min(Math.max(state.row + (e.key === "ArrowDown" || e.key === "j" ? 1 : -1), 0), rows.length - 1);
      const wrap = $("#corpus-table");
      if (state.row * 24 < wrap.scrollTop || (state.row + 2) * 24 > wrap.scrollTop + wrap.clientHeight) wrap.scrollTop = Math.max(0, (state.row - 5) * 24);
      ui.drawCorpus();
      e.preventDefault();
      return;
    }
    if (state.view === "text" && state.text !== null) {
      const steps = tokens(0, sideOfLayer(state.layer), state.text).length;
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") { pickStep(Math.min(Math.max(state.t + (e.key === "ArrowRight" ? 1 : -1), 0), steps - 1), e.shiftKey); e.preventDefault(); }
      else if (e.key === "ArrowDown" || e.key === "ArrowUp") { state.unit = Math.max(0, (state.unit ?? -1) + (e.key === "ArrowDown" ? 1 : -1)); if (state.view === "text" && $("#step-panel")) updateStep(); else render(); e.preventDefault(); }
    }
  }

  // ------------------------------------------------------------------------------------ start up
  function holds() {
    const models = H.models.map((m) => `${m.name} (${m.cell || "?"})`).join(", ");
    const attributed = H.models[0].attribution ? `; Integrated Gradients for the first ${H.models[0].attribution.texts}` : "";
    const info = H.models[0].information;
    const informed = info ? `; per-word information (σ per token, Guan et al. 2019) for the first ${info.texts}, of layers ${H.models.map((m, i) => `${m.name}: ${informedLayers(i).join(", ")}`).join("; ")}` : "";
    const missed = H.models.map((m) => (m.attribution ? `${m.name}: ${m.attribution.within_bound.filter((x) => !x).length} of ${m.attribution.texts} texts miss |delta| <= ${m.attribution.tolerance * 100}% of |F(x) − F(0)|` : null)).filter(Boolean).join("; ");
    return `${H.task}: ${models}. ${H.texts.length} texts with their metrics and aggregates (saturation, histograms, responses, co-clusters); full per-step tracks of h, c, i, f, g, o for ${H.tracked.length} of them${attributed}${informed}. ${missed}`;
  }

  async function start() {
    const t0 = performance.now();
    const { header, arrays, bytes } = await decode();
    H = header; A = arrays;
    H.tracked.forEach((n, j) => trackIndex.set(n, j));
    ui.timings.decode = performance.now() - t0;
    state.layer = layerKeys()[0];
    if (H.models.length < 2) state.b = 0;
    readHash();
    $("#holds").textContent = holds();
    document.addEventListener("keydown", onKey);
    window.addEventListener("scroll", hideTip, true);
    render();
    ui.timings.firstRender = performance.now() - t0;
    const deepFreeze = (o) => { if (o && typeof o === "object" && !ArrayBuffer.isView(o) && !Object.isFrozen(o)) { Object.freeze(o); Object.values(o).forEach(deepFreeze); } return o; };
    deepFreeze(H);
    const api = {
      version: 1, header: H, bytes,
      task: H.task, texts: H.texts, models: H.models.map((m) => m.name), fields: FIELDS.slice(), sides: H.sides, tracked: H.tracked,
      layers: (m) => H.models[m].layers.map((l) => l.key),
      tokens, value, isTracked, outputs: outputsOf,
      track: (m, key, field, n) => { const tr = track(m, key, field, n); if (!tr) return null; const out = new Float64Array(tr.steps * tr.units); for (let t = 0; t < tr.steps; t++) for (let u = 0; u < tr.units; u++) out[t * tr.units + u] = tr.get(t, u); return { steps: tr.steps, units: tr.units, step: tr.step, values: out }; },
      array: (index) => A[index].slice(),
      tokenLoss: (m, n) => Array.from(perText(H.models[m].token_loss, n)),
      attribution: (m, side, n) => (H.models[m].attribution && n < H.models[m].attribution.texts ? Array.from(perText(H.models[m].attribution.scores[side], n)) : null),
      information: informationOf, informationLayers: informedLayers,
      selectAndMatch, searchUnits, changes, stepSaturation,
      ui: Object.freeze({
        state: () => JSON.parse(JSON.stringify(state)),
        show: (view) => { if (!VIEWS.includes(view)) throw new Error(`view must be one of ${VIEWS}`); state.view = view; render(); },
        openText, pickStep, set: (changes) => { Object.assign(state, changes); render(); },
        search: (query) => { state.view = "units"; ui.search = query; ui.searchBy = query.by; ui.unitField = query.field; render(); return ui.lastSearch; },
        lastMatch: () => ui.lastMatch, lastSearch: () => ui.lastSearch,
        cellCenter: (id, t, u) => { const h = ui.heatmaps.find((x) => x.id === id); if (!h) throw new Error(`no heatmap ${id}; shown: ${ui.heatmaps.map((x) => x.id)}`); h.canvas.scrollIntoView({ block: "center" }); const r = h.canvas.getBoundingClientRect(); return { x: r.left + (t + 0.5) * h.cw, y: r.top + (u + 0.5) * h.rh }; },
        heatmaps: () => ui.heatmaps.map((h) => h.id),
        timings: () => Object.assign({}, ui.timings),
      }),
    };
    window.g2lstm = Object.freeze(api);
    document.body.dataset.ready = "true";
  }
  start().catch((error) => { $("#holds").textContent = "The page could not read its data: " + error.message; document.body.dataset.ready = "error"; console.error(error); });
})();
