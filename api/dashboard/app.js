// quantrac supervision dashboard: no framework, no CDN. The page itself needs the API key (HTTP Basic: the
// browser asks for it, any user name, the key as the password) and the browser then sends it with every
// same-origin request, fetch and EventSource included; this script never sees the key.
"use strict";

const I18N = {
  vi: {
    title: "Trung tâm giám sát quan trắc tự động", offline: "Mất kết nối", live: "Trực tuyến",
    liveAlerts: "Cảnh báo đang mở", severity: "Mức", station: "Trạm", zone: "KCN", parameter: "Thông số",
    value: "Giá trị / giới hạn", status: "Trạng thái", updated: "Cập nhật", noAlerts: "Không có cảnh báo đang mở.",
    stationsByZone: "Trạm theo khu công nghiệp", history: "Diễn biến thông số (24 giờ)", ack: "Xác nhận",
    open: "Mới", acknowledged: "Đã xác nhận", resolved: "Đã xử lý", critical: "Nghiêm trọng", warning: "Cảnh báo",
    online: "hoạt động", offlineStation: "mất tín hiệu",
    badKey: "Khóa không hợp lệ hoặc đã bị thu hồi: đóng trình duyệt rồi mở lại trang để đăng nhập bằng khóa khác.",
    forbidden: "Vai trò của khóa này không được phép thao tác này.", noData: "Chưa có dữ liệu.", limit: "Giới hạn",
    other: "English", rule: "Loại cảnh báo", score: "Điểm bất thường", all: "Tất cả", alerts: "cảnh báo",
    threshold: "ngưỡng", reading: "giá trị đo", wholeStation: "cả trạm", clearSince: "đã bình thường từ",
    suppressed: (n, s, i) => `Đang chặn thông báo: ${n} (${s} tạm im lặng, ${i} do trạm mất tín hiệu)`,
    silenced: "tạm im lặng", inhibited: "trạm mất tín hiệu",
    refused: (n) => `${n} bản tin/số liệu bị từ chối trong 24 giờ (xem /api/v1/deadletters)`,
  },
  en: {
    title: "Automatic monitoring supervision centre", offline: "Disconnected", live: "Live",
    liveAlerts: "Open alerts", severity: "Severity", station: "Station", zone: "Zone", parameter: "Parameter",
    value: "Value / limit", status: "Status", updated: "Updated", noAlerts: "No open alerts.",
    stationsByZone: "Stations by industrial zone", history: "Parameter history (24 h)", ack: "Acknowledge",
    open: "Open", acknowledged: "Acknowledged", resolved: "Resolved", critical: "Critical", warning: "Warning",
    online: "online", offlineStation: "offline",
    badKey: "Unknown or revoked key: close the browser and open the page again to sign in with another key.",
    forbidden: "This key's role may not do that.", noData: "No data yet.", limit: "Limit",
    other: "Tiếng Việt", rule: "Rule", score: "Anomaly score", all: "All", alerts: "alerts",
    threshold: "threshold", reading: "reading", wholeStation: "whole station", clearSince: "clear since",
    suppressed: (n, s, i) => `Notifications held back: ${n} (${s} silenced, ${i} inhibited by an offline station)`,
    silenced: "silenced", inhibited: "inhibited",
    refused: (n) => `${n} dead letter${n === 1 ? "" : "s"} of its data in 24 h (see /api/v1/deadletters)`,
  },
};

// Rule families and averaging bases in words, [vi, en].
const RULES = {
  exceedance: ["Vượt giới hạn", "Above limit"], below_minimum: ["Dưới giới hạn dưới", "Below minimum"],
  early_warning: ["Cảnh báo sớm (gần giới hạn)", "Early warning (near limit)"],
  out_of_range: ["Ngoài dải đo của thiết bị", "Outside instrument range"], rate_of_change: ["Thay đổi quá nhanh", "Changing too fast"],
  device_fault: ["Lỗi thiết bị (trạng thái 02)", "Device fault (status 02)"],
  calibration_overrun: ["Hiệu chuẩn quá thời gian", "Calibration overrun"], station_offline: ["Trạm mất tín hiệu", "Station offline"],
  station_clock: ["Đồng hồ trạm chậm hoặc đứng", "Station clock behind or stuck"],
  anomaly_spike: ["Bất thường: đột biến", "Anomaly: spike"], anomaly_drift: ["Bất thường: trôi dần", "Anomaly: drift"],
  anomaly_flatline: ["Bất thường: giá trị đứng yên", "Anomaly: stuck value"],
  anomaly_multivariate: ["Bất thường: tương quan nhiều thông số", "Anomaly: parameters out of step"],
};
const BASES = {
  instant: ["giá trị tức thời", "instantaneous value"], "5m": ["trung bình 5 phút", "5-minute mean"],
  "1h": ["trung bình 1 giờ", "1-hour mean"], "24h": ["trung bình 24 giờ", "24-hour mean"],
};

const state = { lang: localStorage.getItem("quantrac.lang") || "vi", alerts: new Map(), lastEventId: null,
                stations: [], stream: null, suppressed: null };
const $ = (sel) => document.querySelector(sel);
const t = (k) => (I18N[state.lang] || I18N.vi)[k] || k;
const words = (table, key) => (table[key] ? table[key][state.lang === "en" ? 1 : 0] : key);

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang-toggle").textContent = t("other");
  document.title = "quantrac – " + t("title");
  renderAlerts();
  renderZones(state.summary);
  if (state.stations.length) drawChart().catch(() => {});
}

class HttpError extends Error { constructor(status, detail) { super(detail); this.status = status; } }

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "Content-Type": "application/json", ...(options.headers || {}) } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    if (response.status === 401) showError(t("badKey"));
    throw new HttpError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.json();
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString(state.lang === "vi" ? "vi-VN" : "en-GB",
                                            { timeZone: "Asia/Ho_Chi_Minh", hour12: false }) : "";
}

// A window rule's name carries its basis (`exceedance_1h`); the family is the rule without it.
const ruleFamily = (a) => (a.basis !== "instant" && a.rule.endsWith("_" + a.basis) ? a.rule.slice(0, -a.basis.length - 1) : a.rule);
const ruleWords = (a) => words(RULES, ruleFamily(a));
// A station-wide alert (offline, clock) has parameter "*" and no averaging basis to speak of.
const stationWide = (a) => a.parameter === "*";
const basisWords = (a) => (stationWide(a) ? "" : words(BASES, a.basis));
const parameterText = (a) => (stationWide(a) ? t("wholeStation") : a.parameter);

// The instrument's resolution (registry `resolution`) decides the decimals: 2.999999999999936 at 0.01 is 3.00.
function fmtNumber(v, resolution) {
  if (v === null || v === undefined) return "–";
  if (resolution) {
    const decimals = Math.max(0, Math.ceil(-Math.log10(resolution) - 1e-9));
    return (Math.round(v / resolution) * resolution).toFixed(decimals);
  }
  return String(Number(v.toPrecision(4)));
}

function specOf(a) {
  const station = state.stations.find((s) => s.id === a.station_id);
  return station ? station.parameters[a.parameter] : undefined;
}

const UNITLESS = { calibration_overrun: "min", device_fault: "" };
const DURATIONS = new Set(["station_offline", "station_clock"]);

// A silence or a clock lag in seconds, as a person reads it: 45 s, 12 min, 7 h, 2 h 5 min.
function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60), rest = minutes % 60;
  return rest ? `${hours} h ${rest} min` : `${hours} h`;
}

// What follows a number: " mg/L", or nothing for a parameter measured without a unit (the catalogue writes pH's as "-").
const unitSuffix = (unit) => (["", "-"].includes((unit || "").trim()) ? "" : ` ${unit}`);

function valueText(a) {
  const family = ruleFamily(a), spec = specOf(a);
  if (DURATIONS.has(family)) return `${fmtDuration(a.last_value)} / ${fmtDuration(a.limit)}`;
  if (family in UNITLESS) return `${fmtNumber(a.last_value)} / ${fmtNumber(a.limit)} ${UNITLESS[family]}`.trim();
  const suffix = spec ? unitSuffix(spec.unit) : "";
  const value = `${fmtNumber(a.last_value, spec?.resolution)}${family === "rate_of_change" ? `${suffix}/min` : suffix}`;
  if (a.rule.startsWith("anomaly_")) return a.last_value === null ? "–" : `${t("reading")} ${value}`;
  return `${value} / ${fmtNumber(a.limit, spec?.resolution)}`;
}

const scoreText = (a) => (a.score === null || a.score === undefined ? ""
                          : `${fmtNumber(a.score)} (${t("threshold")} ${fmtNumber(a.limit)})`);

function fillFilter(id, values, label) {
  const select = $(id), chosen = select.value;
  const options = [...new Set([...values, chosen].filter(Boolean))].sort();
  select.replaceChildren(new Option(t("all"), ""), ...options.map((v) => new Option(label(v), v)));
  select.value = chosen;
}

function renderAlerts() {
  const body = $("#alerts tbody");
  const active = [...state.alerts.values()].filter((a) => a.status !== "resolved");
  fillFilter("#f-severity", ["critical", "warning"], t);
  fillFilter("#f-zone", active.map((a) => a.zone), (z) => z);
  fillFilter("#f-rule", active.map(ruleFamily), (r) => words(RULES, r));
  const severity = $("#f-severity").value, zone = $("#f-zone").value, rule = $("#f-rule").value;
  const rows = active.filter((a) => (!severity || a.severity === severity) && (!zone || a.zone === zone)
                                    && (!rule || ruleFamily(a) === rule));
  const byStation = new Map();
  rows.sort((a, b) => b.id - a.id).forEach((a) => {
    if (!byStation.has(a.station_id)) byStation.set(a.station_id, []);
    byStation.get(a.station_id).push(a);
  });
  const out = [];
  byStation.forEach((alerts, stationId) => {
    const station = state.stations.find((s) => s.id === stationId);
    const head = document.createElement("tr");
    head.className = "group";
    head.dataset.stationId = stationId;
    const th = document.createElement("th");
    th.colSpan = 8;
    th.textContent = `${stationId} `;
    const sub = document.createElement("span");
    sub.className = "sub";
    sub.textContent = `${station ? station.name + " · " : ""}${alerts[0].zone || ""} · ${alerts.length} ${t("alerts")}`;
    th.append(sub);
    head.append(th);
    out.push(head, ...alerts.map(alertRow));
  });
  body.replaceChildren(...out);
  $("#no-alerts").hidden = rows.length > 0;
  renderSuppressed();
}

function alertRow(a) {
  const tr = document.createElement("tr");
  tr.dataset.alertId = a.id;
  tr.dataset.stationId = a.station_id;
  tr.dataset.rule = ruleFamily(a);
  tr.className = `alert ${a.severity} ${a.status}${a._fresh ? " fresh" : ""}`;
  const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.append(td); return td; };
  cell(t(a.severity));
  cell(parameterText(a));
  const rule = cell(ruleWords(a), "rule");
  const basis = document.createElement("span");
  basis.className = "basis";
  basis.textContent = basisWords(a);
  rule.append(basis);
  cell(valueText(a), "value");
  cell(scoreText(a), "score");
  const status = cell(t(a.status));
  if (a.clear_since) {  // on its way to resolving by itself, once clear for the hold
    const clearing = document.createElement("span");
    clearing.className = "clearing";
    clearing.textContent = ` · ${t("clearSince")} ${fmtTime(a.clear_since)}`;
    status.append(clearing);
  }
  cell(fmtTime(a.updated_at));
  const actions = cell("");
  if (a.status === "open") {
    const button = document.createElement("button");
    button.className = "ack";
    button.textContent = t("ack");
    button.addEventListener("click", () => acknowledge(a.id, button));
    actions.append(button);
  }
  tr.title = a.message;
  return tr;
}

function renderSuppressed() {
  const root = $("#suppressed"), s = state.suppressed;
  root.hidden = !s;
  if (!s) return;
  root.querySelector("summary").textContent = t("suppressed")(s.data.length, s.silenced, s.inhibited);
  root.querySelector("ul").replaceChildren(...s.data.map((a) => {
    const li = document.createElement("li");
    li.dataset.alertId = a.alert_id;
    li.textContent = `${a.station_id} · ${parameterText(a)} · ${words(RULES, a.rule)}: ${t(a.why)} (${a.detail})`;
    return li;
  }));
}

async function refreshSuppressed() {
  try { state.suppressed = await api("/api/v1/alerts/suppressed"); renderSuppressed(); } catch (_) { /* shown on next try */ }
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    const alert = await api(`/api/v1/alerts/${id}/ack`, { method: "POST", body: JSON.stringify({ note: "dashboard" }) });
    state.alerts.set(alert.id, alert);
    renderAlerts();
  } catch (err) {
    button.disabled = false;
    window.alert(err.status === 403 ? t("forbidden") : err.message);
  }
}

function renderZones(summary) {
  if (!summary) return;
  const root = $("#zones");
  root.replaceChildren(...summary.zones.map((z) => {
    const div = document.createElement("div");
    div.className = "zone";
    const h = document.createElement("h3");
    h.textContent = `${z.zone} — ${z.online} ${t("online")}, ${z.offline} ${t("offlineStation")}`;
    div.append(h);
    z.stations.forEach((s) => {
      const span = document.createElement("span");
      span.className = `station ${s.state}`;
      span.dataset.stationId = s.id;
      span.title = `${s.name} · ${s.facility} · ${fmtTime(s.last_reading_at)}`;
      span.textContent = s.id + " ";
      if (s.open_alerts) { const n = document.createElement("span"); n.className = "n"; n.textContent = s.open_alerts; span.append(n); }
      if (s.deadletters_24h) {
        const d = document.createElement("span");
        d.className = "refused";
        d.textContent = ` ⚠${s.deadletters_24h}`;
        d.title = t("refused")(s.deadletters_24h);
        span.append(d);
      }
      div.append(span);
    });
    return div;
  }));
}

async function refreshSummary() {
  try { state.summary = await api("/api/v1/summary/stations"); renderZones(state.summary); } catch (_) { /* shown on next try */ }
}

async function loadAlerts() {
  const page = await api("/api/v1/alerts?status=open&status=acknowledged&limit=500");
  state.alerts = new Map(page.data.map((a) => [a.id, a]));
  state.lastEventId = page.last_event_id;
  renderAlerts();
}

function onEvent(id, data) {
  state.lastEventId = id;
  const event = JSON.parse(data);
  const alert = { ...event.alert, _fresh: true };
  state.alerts.set(alert.id, alert);
  renderAlerts();
  if (["opened", "resolved"].includes(event.kind)) { refreshSummary(); refreshSuppressed(); }
}

function setLive(live) {
  const badge = $("#stream-state");
  badge.dataset.i18n = live ? "live" : "offline"; badge.textContent = t(badge.dataset.i18n);
  badge.classList.toggle("live", live);
}

// Starts right after the alert list, from the event id the list was read at, so no transition falls in
// between. EventSource reconnects by itself with Last-Event-ID; when it gives up (a 401, the API
// restarting) a new one resumes from the last event seen.
function stream() {
  const source = new EventSource(`/api/v1/alerts/stream?after=${encodeURIComponent(state.lastEventId ?? 0)}`);
  state.stream = source;
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("alert", (e) => onEvent(e.lastEventId, e.data));
  source.addEventListener("error", () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED) setTimeout(stream, 2000);
  });
}

async function loadStations() {
  const list = await api("/api/v1/stations");
  state.stations = list.data;
  renderAlerts();
  const select = $("#chart-station");
  select.replaceChildren(...state.stations.map((s) => new Option(`${s.id} – ${s.name}`, s.id)));
  select.onchange = fillParameters;
  fillParameters();
}

function fillParameters() {
  const station = state.stations.find((s) => s.id === $("#chart-station").value);
  const select = $("#chart-parameter");
  const params = station ? Object.values(station.parameters) : [];
  select.replaceChildren(...params.map((p) => new Option(`${p.symbol}${unitSuffix(p.unit) && ` (${p.unit})`}`, p.symbol)));
  select.onchange = drawChart;
  drawChart();
}

// Each selection starts a request; only the latest one draws. Changing the station draws its first parameter,
// so a quick second choice leaves two requests in flight, and the earlier can answer last.
let chartRequest = 0;

async function drawChart() {
  const request = ++chartRequest;
  const stationId = $("#chart-station").value, parameter = $("#chart-parameter").value;
  const root = $("#chart");
  if (!stationId || !parameter) { root.textContent = t("noData"); return; }
  const station = state.stations.find((s) => s.id === stationId);
  const spec = station.parameters[parameter] || {};
  const data = await api(`/api/v1/stations/${encodeURIComponent(stationId)}/readings?parameter=${encodeURIComponent(parameter)}&limit=5000`);
  if (request !== chartRequest) return;
  const points = data.data.filter((r) => r.value !== null).map((r) => [Date.parse(r.ts), r.value]);
  const limits = [spec.limit?.high, spec.limit?.low].filter((v) => v !== undefined && v !== null);
  root.replaceChildren(svgChart(points, limits, unitSuffix(spec.unit)));
}

function svgChart(points, limits, unit) {
  const NS = "http://www.w3.org/2000/svg", W = 900, H = 240, P = 40;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("width", "100%");
  const el = (name, attrs, text) => { const e = document.createElementNS(NS, name);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v)); if (text !== undefined) e.textContent = text; svg.append(e); return e; };
  if (!points.length) { el("text", { x: P, y: H / 2 }, t("noData")); return svg; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]).concat(limits);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(0, ...ys), y1 = Math.max(...ys) * 1.1 || 1;
  const X = (x) => P + (x - x0) / (x1 - x0) * (W - 2 * P), Y = (y) => H - P - (y - y0) / (y1 - y0) * (H - 2 * P);
  el("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#999" });
  el("line", { x1: P, y1: P, x2: P, y2: H - P, stroke: "#999" });
  el("text", { x: 4, y: P - 8 }, `${y1.toPrecision(3)}${unit}`);
  el("text", { x: 4, y: H - P }, `${y0}`);
  el("text", { x: P, y: H - 10 }, fmtTime(new Date(x0).toISOString()));
  el("text", { x: W - P - 120, y: H - 10 }, fmtTime(new Date(x1).toISOString()));
  limits.forEach((v) => { el("line", { class: "limit", x1: P, x2: W - P, y1: Y(v), y2: Y(v) });
                          el("text", { x: W - P - 80, y: Y(v) - 4 }, `${t("limit")} ${v}`); });
  el("polyline", { class: "line", points: points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ") });
  return svg;
}

function showError(message) {
  $("#error").textContent = message || "";
  $("#error").hidden = !message;
}

async function start() {
  try {
    await loadAlerts();
  } catch (err) { showError(err.message); return; }
  stream();
  refreshSummary();
  refreshSuppressed();
  setInterval(() => { refreshSummary(); refreshSuppressed(); }, 30000);
  loadStations().catch(() => {});
}

["#f-severity", "#f-zone", "#f-rule"].forEach((id) => $(id).addEventListener("change", renderAlerts));

$("#lang-toggle").addEventListener("click", () => {
  state.lang = state.lang === "vi" ? "en" : "vi";
  localStorage.setItem("quantrac.lang", state.lang);
  applyLanguage();
});

applyLanguage();
start();
