// spikescan web map: upload a scene, follow jobs over server-sent events, look at their layers on a map.
// Plain browser JavaScript and Leaflet (vendored at build time): nothing is fetched from outside the server.
"use strict";

const KEY_STORE = "spikescan.apiKey";
const FINAL = new Set(["done", "failed", "cancelled"]);
const PREVIEWABLE = new Set(["running", "mosaicking"]); // states whose class tiles show the chips done so far
const PARTIAL_REFRESH_MS = 2000; // how often a running job's class tiles are re-read while chips finish

const state = { models: new Map(), jobs: new Map(), streams: new Map(), selected: null, layers: null };
const $ = (id) => document.getElementById(id);

// --- HTTP: every call carries the session's API key; errors become the API's own message --------------------
function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = (body.error && body.error.message) || message;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new Error(response.status === 401 ? `${message} — enter your API key above` : message);
  }
  return response;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// --- models and upload -----------------------------------------------------------------------------------------
async function loadModels() {
  const models = await (await api("v1/models")).json();
  const select = $("model");
  select.replaceChildren();
  state.models.clear();
  for (const m of models) {
    state.models.set(m.name, m);
    select.append(new Option(`${m.name} (${m.task}, ${m.bands.length} bands)`, m.name));
  }
  describeBands();
}

// --- the form: bands from the card and the picked scene's own header, stride, min score, AOI ---------------
const sceneInfo = { count: 0, names: [] }; // of the picked file, read from its TIFF header in the browser

function describeBands() {
  const model = state.models.get($("model").value);
  if (!model) return;
  $("min-score-label").hidden = model.task !== "detection";
  const wants = model.bands.join(", ");
  let hint = `The model takes ${model.bands.length} bands: ${wants}. Give the scene's band numbers in that order`;
  if (sceneInfo.count) {
    const names = sceneInfo.names.map((n, i) => `${i + 1}${n ? " " + n : ""}`).join(", ");
    hint += `; this scene has ${sceneInfo.count}: ${names}`;
  }
  $("bands-hint").textContent = hint + ".";
  const field = $("bands");
  field.placeholder = sceneInfo.count === model.bands.length ? "all, in order" : "matched by name";
  if (!sceneInfo.count || field.dataset.edited) return;
  // Pre-filled from the card and the scene's band names; an empty field lets the server match them.
  const lower = sceneInfo.names.map((n) => (n || "").toLowerCase());
  const picked = model.bands.map((b) => lower.indexOf(b.toLowerCase()) + 1);
  field.value = picked.every((i) => i > 0) ? picked.join(",") : "";
}

// A GeoTIFF's band count and GDAL band descriptions, from its first IFD (classic TIFF and BigTIFF).
async function readTiffBands(file) {
  const head = new DataView(await file.slice(0, 16).arrayBuffer());
  const le = head.getUint16(0) === 0x4949;
  const big = head.getUint16(2, le) === 43;
  const offset = big ? Number(head.getBigUint64(8, le)) : head.getUint32(4, le);
  const ifd = new DataView(await file.slice(offset, offset + 8 + 20 * 512).arrayBuffer());
  const n = big ? Number(ifd.getBigUint64(0, le)) : ifd.getUint16(0, le);
  const size = big ? 20 : 12;
  let count = 1, metadata = null;
  for (let i = 0; i < n && (big ? 8 : 2) + (i + 1) * size <= ifd.byteLength; i++) {
    const at = (big ? 8 : 2) + i * size;
    const tag = ifd.getUint16(at, le);
    const type = ifd.getUint16(at + 2, le);
    const items = big ? Number(ifd.getBigUint64(at + 4, le)) : ifd.getUint32(at + 4, le);
    const value = at + (big ? 12 : 8);
    if (tag === 277) count = ifd.getUint16(value, le);
    if (tag === 42112 && type === 2) { // GDAL_METADATA: XML text
      const inline = items <= (big ? 8 : 4);
      const where = inline ? null : (big ? Number(ifd.getBigUint64(value, le)) : ifd.getUint32(value, le));
      const bytes = inline ? new Uint8Array(ifd.buffer, value, items) : await file.slice(where, where + items).arrayBuffer();
      metadata = new TextDecoder().decode(bytes);
    }
  }
  const names = new Array(count).fill("");
  if (metadata) {
    const xml = new DOMParser().parseFromString(metadata.replace(/\0+$/, ""), "application/xml");
    for (const item of xml.querySelectorAll('Item[role="description"]')) {
      const band = Number(item.getAttribute("sample"));
      if (band >= 0 && band < count) names[band] = item.textContent.trim();
    }
  }
  return { count, names };
}

async function onScenePicked() {
  const file = $("scene").files[0];
  sceneInfo.count = 0;
  sceneInfo.names = [];
  delete $("bands").dataset.edited;
  if (file) {
    try {
      Object.assign(sceneInfo, await readTiffBands(file));
    } catch (_) { /* not a TIFF we can read here: the server will say what it is */ }
  }
  describeBands();
}

async function onAoiFile() {
  const file = $("aoi-file").files[0];
  if (file) $("aoi").value = await file.text();
}

function mapViewAsAoi() {
  const b = map.getBounds();
  const ring = [[b.getWest(), b.getSouth()], [b.getEast(), b.getSouth()], [b.getEast(), b.getNorth()],
                [b.getWest(), b.getNorth()], [b.getWest(), b.getSouth()]];
  $("aoi").value = JSON.stringify({ type: "Polygon", coordinates: [ring.map(([x, y]) => [+x.toFixed(6), +y.toFixed(6)])] });
}

// The API names the request field at fault (e.g. field `bands`): put the cursor there.
function focusField(message) {
  const m = /field `(\w+)`/.exec(message || "");
  const input = m && document.querySelector(`#upload [name="${m[1]}"]`);
  if (input) input.focus();
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const form = new FormData($("upload"));
  $("submit").disabled = true;
  try {
    const accepted = await (await api("v1/jobs", { method: "POST", body: form })).json();
    upsertJob({ id: accepted.id, status: accepted.status, model: form.get("model"), links: accepted.links,
                progress: { chips_total: 0, chips_done: 0 } });
    selectJob(accepted.id);
    follow(accepted.id);
  } catch (err) {
    showError(err.message);
    focusField(err.message);
  } finally {
    $("submit").disabled = false;
  }
}

// --- job list and progress over server-sent events -----------------------------------------------------------
async function loadJobs() {
  const jobs = await (await api("v1/jobs")).json();
  jobs.sort((a, b) => b.created - a.created);
  for (const job of jobs) {
    upsertJob(job);
    if (!FINAL.has(job.status)) follow(job.id);
  }
}

function percent(job) {
  if (job.status === "done") return 100;
  const p = job.progress || {};
  // chips_total counts only the chips that have data (skipped ones are not queued at all)
  return p.chips_total ? Math.round((100 * (p.chips_done + (p.chips_failed || 0))) / p.chips_total) : 0;
}

function jobNote(job) {
  if (job.error) return job.error;
  const p = job.progress || {};
  const eta = p.eta_s != null && !FINAL.has(job.status) ? `, ETA ${Math.ceil(p.eta_s)} s` : "";
  return p.chips_total ? `${p.chips_done}/${p.chips_total} chips${eta}` : "";
}

function renderJob(li, job) {
  li.className = `status-${job.status}` + (state.selected === job.id ? " selected" : "");
  li.dataset.status = job.status;
  li.querySelector(".id").textContent = job.id.slice(0, 8);
  li.querySelector(".state").textContent = `${job.model} · ${job.status}`;
  li.querySelector(".bar > div").style.width = `${percent(job)}%`;
  li.querySelector(".note").textContent = jobNote(job);
}

function upsertJob(job) {
  const known = state.jobs.get(job.id);
  const merged = known ? { ...known.job, ...job } : job;
  let li = known && known.li;
  if (!li) {
    li = document.createElement("li");
    li.dataset.jobId = job.id;
    li.innerHTML = '<div class="head"><span class="id"></span><span class="state"></span></div>' +
      '<div class="bar"><div></div></div><div class="note"></div>';
    li.addEventListener("click", () => selectJob(job.id));
    $("jobs").prepend(li);
  }
  state.jobs.set(job.id, { job: merged, li });
  renderJob(li, merged);
  return merged;
}

// EventSource cannot send an Authorization header, so the stream is read with fetch and parsed here.
async function follow(jobId) {
  if (state.streams.has(jobId)) return;
  const controller = new AbortController();
  state.streams.set(jobId, controller);
  try {
    const response = await api(`v1/jobs/${jobId}/events`, { signal: controller.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(`job ${jobId.slice(0, 8)}: ${err.message}`);
  } finally {
    state.streams.delete(jobId);
  }
}

function onEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  if (type !== "progress" || !data.length) return;
  const job = upsertJob(JSON.parse(data.join("\n")));
  if (job.id === state.selected) showJobLayers(job);
}

// --- map -------------------------------------------------------------------------------------------------------
const map = L.map("map", { worldCopyJump: true }).setView([20, 0], 2);
const NARROW = window.matchMedia("(max-width: 700px)").matches;
const overlays = L.control.layers(null, {}, { collapsed: NARROW }).addTo(map);
// A resize (phone turned, window narrowed) moves the layout: keep the selected scene in view.
window.addEventListener("resize", () => {
  map.invalidateSize();
  if (state.layers && state.layers.bounds) map.fitBounds(state.layers.bounds, { padding: [20, 20] });
});
// One opacity for the results (class and score layers), so the scene under them can be judged.
state.opacity = 0.75;
const opacity = L.control({ position: "topright" });
opacity.onAdd = () => {
  const box = L.DomUtil.create("label", "opacity");
  box.innerHTML = 'Results <input id="opacity" type="range" min="0" max="1" step="0.05" aria-label="results opacity">';
  L.DomEvent.disableClickPropagation(box);
  const input = box.querySelector("input");
  input.value = String(state.opacity);
  input.addEventListener("input", () => setResultsOpacity(Number(input.value)));
  return box;
};
opacity.addTo(map);

function setResultsOpacity(value) {
  state.opacity = value;
  if (!state.layers) return;
  const group = state.layers.overlays["Class layer"];
  if (group) group.eachLayer((l) => l.setOpacity(value));
  const scores = state.layers.scores;
  if (scores) scores.setOpacity(value);
}

// An operator-configured basemap (SPIKESCAN_BASEMAP_URL); none by default, so nothing is fetched from outside.
async function loadBasemap() {
  const config = await (await api("web/config.json")).json();
  if (!config.basemap_url || state.basemap) return;
  state.basemap = L.tileLayer(config.basemap_url, { attribution: config.basemap_attribution || "", maxZoom: 22 });
  state.basemap.addTo(map);
  overlays.addBaseLayer(state.basemap, "Basemap");
}

const legend = L.control({ position: "bottomright" });
legend.onAdd = () => L.DomUtil.create("div", "legend");
legend.addTo(map);

// Tiles fetched with the API key (an <img src> cannot carry it), shown through object URLs.
const AuthTiles = L.GridLayer.extend({
  createTile(coords, done) {
    const img = document.createElement("img");
    img.alt = "";
    const url = this.options.template.replace("{z}", coords.z).replace("{x}", coords.x).replace("{y}", coords.y);
    const sep = url.includes("?") ? "&" : "?";
    fetch(`${url}${sep}v=${this.options.version}`, { headers: authHeaders() })
      .then((r) => (r.ok ? r.blob() : null))
      .then((blob) => {
        if (!blob) return done(null, img);
        img.onload = () => { URL.revokeObjectURL(img.src); done(null, img); };
        img.src = URL.createObjectURL(blob);
      })
      .catch(() => done(null, img));
    return img;
  },
});

function legendFor(modelName) {
  const model = state.models.get(modelName);
  const box = document.querySelector(".legend");
  if (!model || !model.colors) { box.hidden = true; return; }
  box.hidden = false;
  box.innerHTML = `<h3>${escapeHtml(model.name)}</h3>` + model.classes.map((c, i) =>
    `<div><i style="background:${rgba(model.colors[i])}"></i>${escapeHtml(c)}</div>`).join("");
}

function rgba(c) { return c ? `rgba(${c[0]},${c[1]},${c[2]},${(c[3] ?? 255) / 255})` : "#f0f"; }
function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function formatArea(m2) {
  return m2 >= 1e6 ? `${(m2 / 1e6).toFixed(2)} km²` : m2 >= 1e4 ? `${(m2 / 1e4).toFixed(2)} ha` : `${m2.toFixed(0)} m²`;
}

function clearLayers() {
  if (!state.layers) return;
  for (const layer of Object.values(state.layers.overlays)) {
    overlays.removeLayer(layer);
    map.removeLayer(layer);
  }
  clearTimeout(state.layers.pending);
  state.layers = null;
}

function addOverlay(layers, name, layer, show = true) {
  layers.overlays[name] = layer;
  overlays.addOverlay(layer, name);
  if (show) layer.addTo(map);
}

// The source scene under the results (from the job's own upload: available as soon as the job is).
function showScene(job, layers) {
  const scene = new AuthTiles({
    template: `v1/jobs/${job.id}/tiles/{z}/{x}/{y}.png?layer=scene`, version: 0, bounds: layers.bounds,
    maxZoom: 22, zIndex: 1, className: "scene-tiles",
  });
  addOverlay(layers, "Scene imagery", scene);
}

function showScores(job, layers) {
  const model = state.models.get(job.model);
  const what = model && model.target_classes.length ? model.target_classes.join(" + ") : "winning class";
  layers.scores = new AuthTiles({
    template: `v1/jobs/${job.id}/tiles/{z}/{x}/{y}.png?layer=scores`, version: 0, bounds: layers.bounds,
    maxZoom: 22, zIndex: 4, opacity: state.opacity, className: "score-tiles",
  });
  addOverlay(layers, `Scores (${what})`, layers.scores, false);
}

function selectJob(jobId) {
  state.selected = jobId;
  clearLayers();
  for (const { job, li } of state.jobs.values()) renderJob(li, job);
  const job = state.jobs.get(jobId).job;
  legendFor(job.model);
  showJobLayers(job);
}

// The footprint comes from the job's extent (before it is done) or its STAC item; the class layer is re-read
// as chips finish, so a running job fills in on the map; detections exist once the job is done.
async function showJobLayers(job) {
  if (!state.layers) state.layers = { overlays: {}, version: 0, footprint: null, finalShown: false, lastRefresh: 0, pending: null };
  const layers = state.layers;
  $("links").hidden = job.status !== "done";
  try {
    // One footprint request however many events arrive meanwhile; tiles wait for its bounds.
    layers.footprint = layers.footprint || showFootprint(job, layers);
    await layers.footprint;
    if (state.layers !== layers) return; // another job was selected meanwhile
    if (!layers.sceneShown && job.status !== "failed") {
      layers.sceneShown = true;
      showScene(job, layers);
    }
    if (job.status === "done" && !layers.finalShown) {
      layers.finalShown = true;
      refreshClassTiles(job, true);
      showScores(job, layers);
      await showDetections(job, layers);
    } else if (PREVIEWABLE.has(job.status)) {
      refreshClassTiles(job, false);
    }
  } catch (err) {
    showError(err.message);
  }
}

async function showFootprint(job, layers) {
  const url = job.status === "done" ? `v1/jobs/${job.id}/results/item.json` : `v1/jobs/${job.id}/extent`;
  const feature = await (await api(url)).json();
  if (state.layers !== layers) return;
  const footprint = L.geoJSON(feature, { style: { color: "#1d2530", weight: 2, fill: false, dashArray: "6 4" } });
  addOverlay(layers, "Scene footprint", footprint);
  const [w, s, e, n] = feature.bbox;
  layers.bounds = L.latLngBounds([s, w], [n, e]);
  map.fitBounds(layers.bounds, { padding: [20, 20] });
}

function refreshClassTiles(job, final) {
  const layers = state.layers;
  const wait = layers.lastRefresh + PARTIAL_REFRESH_MS - Date.now();
  if (!final && wait > 0) {
    // Throttled, but never dropped: the last chips' event must still reach the map.
    layers.pending = layers.pending || setTimeout(() => {
      layers.pending = null;
      const latest = state.jobs.get(job.id).job;
      if (state.layers === layers && !layers.finalShown && PREVIEWABLE.has(latest.status)) {
        refreshClassTiles(latest, false);
      }
    }, wait);
    return;
  }
  layers.lastRefresh = Date.now();
  layers.version += 1;
  let group = layers.overlays["Class layer"];
  if (!group) {
    group = L.layerGroup();
    addOverlay(layers, "Class layer", group);
  }
  if (!map.hasLayer(group)) group.clearLayers(); // hidden: nothing would load, so nothing to swap with
  const tiles = new AuthTiles({
    template: `v1/jobs/${job.id}/tiles/{z}/{x}/{y}.png`, version: layers.version, bounds: layers.bounds,
    opacity: state.opacity, maxZoom: 22, zIndex: 5, className: "class-tiles",
  });
  // The older tiles stay until the newer ones are in, so a refresh never blanks the map.
  tiles.once("load", () => group.eachLayer((old) => {
    if (old.options.version < tiles.options.version) group.removeLayer(old);
  }));
  group.addLayer(tiles);
}

async function showDetections(job, layers) {
  const data = await (await api(`v1/jobs/${job.id}/results/detections.geojson`)).json();
  if (state.layers !== layers) return;
  const model = state.models.get(job.model);
  // A detector's features carry its object label (e.g. "tree"), not a class name: draw them in the colour of
  // its first target class.
  const classOf = (name) => (model && model.classes.includes(name) ? name : model?.target_classes?.[0]);
  const colour = (name) => rgba(model && model.colors[model.classes.indexOf(classOf(name))]);
  const layer = L.geoJSON(data, {
    style: (f) => ({ color: "#111", weight: 1, fillColor: colour(f.properties.class), fillOpacity: 0.6,
                     className: "detection" }),
    onEachFeature: (f, l) => l.bindPopup(
      `<b>${escapeHtml(f.properties.class)}</b><br>score ${Number(f.properties.score).toFixed(3)}` +
      `<br>area ${formatArea(f.properties.area_m2)}`),
  });
  addOverlay(layers, `Detections (${data.features.length})`, layer);
  document.body.dataset.detections = String(data.features.length);
}

// --- QGIS links ------------------------------------------------------------------------------------------------
async function copyLink(file) {
  const entry = state.jobs.get(state.selected);
  if (!entry) return;
  const url = new URL(`v1/jobs/${entry.job.id}/results/${file}`, document.baseURI).href;
  const field = $("copied");
  field.value = url;
  try {
    await navigator.clipboard.writeText(url);
  } catch (_) {
    field.select(); // clipboard refused (permissions): leave it selected for Ctrl+C
    document.execCommand("copy");
  }
}

// --- start -----------------------------------------------------------------------------------------------------
async function start() {
  showError("");
  for (const controller of state.streams.values()) controller.abort();
  try {
    await loadModels();
    await loadBasemap();
    await loadJobs();
  } catch (err) {
    showError(err.message);
  }
}

$("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
$("api-key").addEventListener("change", (e) => {
  const key = e.target.value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
  start();
});
$("upload").addEventListener("submit", submit);
$("model").addEventListener("change", () => { delete $("bands").dataset.edited; describeBands(); });
$("scene").addEventListener("change", onScenePicked);
$("bands").addEventListener("input", () => { $("bands").dataset.edited = "1"; });
$("aoi-file").addEventListener("change", onAoiFile);
$("aoi-view").addEventListener("click", mapViewAsAoi);
$("copy-cog").addEventListener("click", () => copyLink("classes.tif"));
$("copy-geojson").addEventListener("click", () => copyLink("detections.geojson"));
start();
