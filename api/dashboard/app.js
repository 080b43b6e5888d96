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
    other: "English",
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
    other: "Tiếng Việt",
  },
};

const state = { lang: localStorage.getItem("quantrac.lang") || "vi", alerts: new Map(), lastEventId: null,
                stations: [], stream: null };
const $ = (sel) => document.querySelector(sel);
const t = (k) => (I18N[state.lang] || I18N.vi)[k] || k;

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

function renderAlerts() {
  const body = $("#alerts tbody");
  const rows = [...state.alerts.values()].filter((a) => a.status !== "resolved").sort((a, b) => b.id - a.id);
  body.replaceChildren(...rows.map((a) => {
    const tr = document.createElement("tr");
    tr.dataset.alertId = a.id;
    tr.className = `${a.severity} ${a.status}${a._fresh ? " fresh" : ""}`;
    const cells = [t(a.severity), a.station_id, a.zone || "", a.parameter,
                   `${a.last_value ?? "–"} / ${a.limit ?? "–"}`, t(a.status), fmtTime(a.updated_at)];
    cells.forEach((text) => { const td = document.createElement("td"); td.textContent = text; tr.append(td); });
    const td = document.createElement("td");
    if (a.status === "open") {
      const button = document.createElement("button");
      button.className = "ack";
      button.textContent = t("ack");
      button.addEventListener("click", () => acknowledge(a.id, button));
      td.append(button);
    }
    tr.append(td);
    tr.title = a.message;
    return tr;
  }));
  $("#no-alerts").hidden = rows.length > 0;
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
  if (["opened", "resolved"].includes(event.kind)) refreshSummary();
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
  const select = $("#chart-station");
  select.replaceChildren(...state.stations.map((s) => new Option(`${s.id} – ${s.name}`, s.id)));
  select.onchange = fillParameters;
  fillParameters();
}

function fillParameters() {
  const station = state.stations.find((s) => s.id === $("#chart-station").value);
  const select = $("#chart-parameter");
  const params = station ? Object.values(station.parameters) : [];
  select.replaceChildren(...params.map((p) => new Option(`${p.symbol} (${p.unit})`, p.symbol)));
  select.onchange = drawChart;
  drawChart();
}

async function drawChart() {
  const stationId = $("#chart-station").value, parameter = $("#chart-parameter").value;
  const root = $("#chart");
  if (!stationId || !parameter) { root.textContent = t("noData"); return; }
  const station = state.stations.find((s) => s.id === stationId);
  const spec = station.parameters[parameter] || {};
  const data = await api(`/api/v1/stations/${encodeURIComponent(stationId)}/readings?parameter=${encodeURIComponent(parameter)}&limit=5000`);
  const points = data.data.filter((r) => r.value !== null).map((r) => [Date.parse(r.ts), r.value]);
  const limits = [spec.limit?.high, spec.limit?.low].filter((v) => v !== undefined && v !== null);
  root.replaceChildren(svgChart(points, limits, spec.unit || ""));
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
  el("text", { x: 4, y: P - 8 }, `${y1.toPrecision(3)} ${unit}`);
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
  setInterval(refreshSummary, 30000);
  loadStations().catch(() => {});
}

$("#lang-toggle").addEventListener("click", () => {
  state.lang = state.lang === "vi" ? "en" : "vi";
  localStorage.setItem("quantrac.lang", state.lang);
  applyLanguage();
});

applyLanguage();
start();
