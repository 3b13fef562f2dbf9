// VolGuard dashboard page: live over /ws, charts from /api/dashboard/full. No build step.
"use strict";

// No message for this long (wall ms) while connected: the data is stale and the banner says so.
const STALE_AFTER_MS = 15000;
const REFRESH_MIN_MS = 1000;
const DARK = { paper_bgcolor: "#1b2129", plot_bgcolor: "#1b2129", font: { color: "#d8dee9", size: 11 },
  margin: { l: 48, r: 12, t: 28, b: 36 } };

let lastMessageAt = 0;
let connected = false;
let refreshTimer = null;
let lastRefresh = 0;

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + "%");

function setText(id, text) { $(id).textContent = text; }

function renderKpis(k) {
  const v = k.volatility;
  setText("kpi-spot", fmt(k.spot));
  setText("kpi-vix", fmt(k.vix));
  setText("kpi-ivp", v ? fmt(v.iv_percentile, 0) : "–");
  setText("kpi-regime", v ? v.regime : "–");
  setText("kpi-event", v ? String(v.event_risk) : "–");
  setText("kpi-pcr", v ? fmt(v.pcr) : "–");
  setText("kpi-maxpain", v ? fmt(v.max_pain, 0) : "–");
  setText("kpi-dte", v ? String(v.days_to_expiry) : "–");
  setText("kpi-pnl", k.day_pnl === null ? "–" : k.day_pnl);
  renderState(k.trading_state);
  setText("kpi-feed", k.feed === null ? "–" : k.feed);
  setText("kpi-broker", k.broker_connected === null ? "–" : (k.broker_connected ? "connected" : "DOWN"));
  setText("kpi-asof", k.last_update === null ? "–" : k.last_update.replace("T", " ").slice(0, 19));
}

function renderState(state) {
  const el = $("kpi-state");
  el.textContent = state === null || state === undefined ? "–" : state;
  el.className = state ? "state-" + state : "";
}

function plot(id, traces, layout) {
  const el = $(id);
  const points = traces.reduce((n, t) => n + ((t.z && t.z.length) || (t.y && t.y.filter((y) => y !== null).length) || 0), 0);
  el.dataset.points = String(points);
  Plotly.react(el, traces, Object.assign({ title: { text: el.dataset.title, font: { size: 12 } } }, DARK, layout || {}),
    { displayModeBar: false, responsive: true });
}

// Out-of-the-money IV per strike: puts below the forward, calls above (the quotes that trade).
function otmIv(chain) {
  return chain.strikes.map((r) => (r.strike < chain.forward ? r.iv_put : r.iv_call));
}

function renderVolCharts(full) {
  const vol = full.volatility;
  const chains = (full.chains || []).filter((c) => c !== null);
  if (vol && chains.length) {
    const strikes = Array.from(new Set(chains.flatMap((c) => c.strikes.map((r) => r.strike)))).sort((a, b) => a - b);
    const labels = chains.map((c) => c.expiry);
    const z = chains.map((c) => {
      const byStrike = new Map(c.strikes.map((r, i) => [r.strike, otmIv(c)[i]]));
      return strikes.map((s) => (byStrike.has(s) && byStrike.get(s) !== null ? 100 * byStrike.get(s) : null));
    });
    const days = vol.expiries.map((e) => e.days_to_expiry);
    plot("chart-surface", [{ type: "surface", x: strikes, y: days, z, colorscale: "Viridis", showscale: false }],
      { scene: { xaxis: { title: "strike" }, yaxis: { title: "days" }, zaxis: { title: "IV %" } }, margin: { l: 0, r: 0, t: 28, b: 0 } });
    plot("chart-heatmap", [{ type: "heatmap", x: strikes, y: labels, z, colorscale: "Viridis" }]);
    const smiles = [];
    chains.forEach((c) => {
      const x = c.strikes.map((r) => r.strike);
      const flagged = c.strikes.map((r) => r.call_flags.concat(r.put_flags).join(" "));
      smiles.push({ type: "scatter", mode: "markers", name: c.expiry + " market", x, y: otmIv(c).map((v) => (v === null ? null : 100 * v)),
        text: flagged, marker: { size: 4 } });
      if (c.sabr_iv) smiles.push({ type: "scatter", mode: "lines", name: c.expiry + " SABR", x, y: c.sabr_iv.map((v) => (v === null ? null : 100 * v)) });
    });
    plot("chart-smiles", smiles, { yaxis: { title: "IV %" }, showlegend: false });
    const term = vol.term.points;
    plot("chart-term", [{ type: "scatter", mode: "lines+markers", x: term.map((p) => p.days_to_expiry),
      y: term.map((p) => (p.atm_iv === null ? null : 100 * p.atm_iv)) }], { xaxis: { title: "days" }, yaxis: { title: "ATM IV %" } });
  }
  const hist = full.volatility_history || [];
  const t = hist.map((p) => p.ts_event);
  plot("chart-straddle", [
    { type: "scatter", mode: "lines", name: "straddle", x: t, y: hist.map((p) => p.straddle) },
    { type: "scatter", mode: "lines", name: "expected move", x: t, y: hist.map((p) => p.expected_move) },
  ]);
  plot("chart-vols", [
    { type: "scatter", mode: "lines", name: "ATM IV", x: t, y: hist.map((p) => (p.atm_iv === null ? null : 100 * p.atm_iv)) },
    { type: "scatter", mode: "lines", name: "realised (YZ)", x: t, y: hist.map((p) => (p.realised === null ? null : 100 * p.realised)) },
    { type: "scatter", mode: "lines", name: "GARCH", x: t, y: hist.map((p) => (p.garch === null ? null : 100 * p.garch)) },
  ], { yaxis: { title: "vol %" } });
  plot("chart-regime", [{ type: "scatter", mode: "markers", x: t, y: hist.map((p) => p.regime), marker: { size: 5 } }]);
}

function renderRiskCharts(full) {
  const p = full.portfolio;
  if (p) {
    const b = p.buckets;
    plot("chart-capital", [
      { type: "bar", name: "allocated", x: b.map((x) => x.bucket), y: b.map((x) => Number(x.capital_allocated)) },
      { type: "bar", name: "used", x: b.map((x) => x.bucket), y: b.map((x) => Number(x.capital_used)) },
    ], { barmode: "group" });
    if (p.net_greeks) {
      const names = ["delta", "gamma", "vega"];
      plot("chart-greeks", [
        { type: "bar", name: "|net|", x: names, y: names.map((n) => Math.abs(p.net_greeks[n])) },
        { type: "bar", name: "limit", x: names, y: names.map((n) => full.limits[n]) },
      ], { barmode: "group" });
    }
  }
  const pnl = full.pnl_history || [];
  let peak = -Infinity;
  const drawdown = pnl.map((x) => { if (x.day_pnl === null) return null; peak = Math.max(peak, x.day_pnl); return x.day_pnl - peak; });
  plot("chart-pnl", [
    { type: "scatter", mode: "lines", name: "day P&L", x: pnl.map((x) => x.ts_event), y: pnl.map((x) => x.day_pnl) },
    { type: "scatter", mode: "lines", name: "drawdown", x: pnl.map((x) => x.ts_event), y: drawdown, fill: "tozeroy" },
  ]);
}

function table(id, rows, columns) {
  const el = $(id);
  const head = "<tr>" + columns.map(([title]) => `<th>${title}</th>`).join("") + "</tr>";
  if (!rows || rows.length === 0) {
    el.innerHTML = head + `<tr><td class="empty" colspan="${columns.length}">${rows === null ? "unknown" : "none"}</td></tr>`;
    return;
  }
  const esc = (v) => String(v === null || v === undefined ? "–" : v).replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]);
  el.innerHTML = head + rows.map((r) => "<tr>" + columns.map(([, f]) => `<td>${esc(f(r))}</td>`).join("") + "</tr>").join("");
}

function renderTables(full) {
  const p = full.portfolio;
  table("table-positions", p ? p.positions : null, [["instrument", (r) => r.instrument_key], ["expiry", (r) => r.expiry],
    ["strike", (r) => r.strike], ["type", (r) => r.option_type], ["qty", (r) => r.quantity], ["avg", (r) => r.avg_price],
    ["mark", (r) => r.mark], ["unrealised", (r) => r.unrealised_pnl]]);
  table("table-trades", p ? p.trades : null, [["trade", (r) => r.trade_id], ["bucket", (r) => r.bucket], ["structure", (r) => r.structure],
    ["credit", (r) => r.entry_credit], ["to close", (r) => r.cost_to_close], ["unrealised", (r) => r.unrealised_pnl]]);
  table("table-orders", full.orders, [["time", (r) => r.ts_event], ["order", (r) => r.client_order_id], ["basket", (r) => r.basket_id],
    ["side", (r) => r.side], ["qty", (r) => r.quantity], ["limit", (r) => r.limit_price], ["status", (r) => r.status], ["filled", (r) => r.filled_qty]]);
  table("table-fills", full.fills, [["time", (r) => r.ts_event], ["order", (r) => r.client_order_id], ["side", (r) => r.side],
    ["strike", (r) => r.strike], ["type", (r) => r.option_type], ["qty", (r) => r.quantity], ["price", (r) => r.price], ["fees", (r) => r.fees]]);
  table("table-decisions", full.decisions, [["time", (r) => r.ts_event], ["intent", (r) => r.intent_id], ["approved", (r) => r.approved],
    ["lots", (r) => `${r.approved_lots}/${r.requested_lots}`], ["reasons", (r) => r.reasons.join("; ")]]);
  table("table-alerts", full.alerts, [["time", (r) => r.ts_event], ["severity", (r) => r.severity], ["code", (r) => r.code],
    ["message", (r) => r.message], ["source", (r) => r.source]]);
}

async function refresh() {
  lastRefresh = Date.now();
  const response = await fetch("/api/dashboard/full");
  if (!response.ok) return;
  const full = await response.json();
  renderKpis(full.kpis);
  renderVolCharts(full);
  renderRiskCharts(full);
  renderTables(full);
  document.body.dataset.refreshed = String(lastRefresh);
}

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  const wait = Math.max(0, REFRESH_MIN_MS - (Date.now() - lastRefresh));
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, wait);
}

function onMessage(message) {
  lastMessageAt = Date.now();
  if (message.kind === "hello") renderKpis(message.data);
  if (message.kind === "state") renderState(message.data.state);
  scheduleRefresh();
}

function connect() {
  const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  socket.onopen = () => { connected = true; lastMessageAt = Date.now(); updateBanner(); };
  socket.onmessage = (e) => onMessage(JSON.parse(e.data));
  socket.onclose = () => { connected = false; updateBanner(); setTimeout(connect, 2000); };
}

function updateBanner() {
  const banner = $("banner");
  if (!connected) {
    banner.hidden = false; banner.className = "banner down"; banner.textContent = "Disconnected from the dashboard: reconnecting…";
  } else if (Date.now() - lastMessageAt > STALE_AFTER_MS) {
    banner.hidden = false; banner.className = "banner stale";
    banner.textContent = `Stale: no update for ${Math.round((Date.now() - lastMessageAt) / 1000)} s`;
  } else {
    banner.hidden = true;
  }
}

async function command(button) {
  const token = $("token").value;
  if (!token) { setText("command-result", "enter the operator token first"); return; }
  if (!window.confirm(`${button.dataset.what}?`)) return;
  const response = await fetch(button.dataset.path, {
    method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ reason: `dashboard: ${button.textContent}` }),
  });
  const body = await response.json();
  setText("command-result", response.ok ? `${body.commands.join(", ")} sent (${body.event_ids.join(", ")})` : `refused: ${body.detail}`);
}

document.querySelectorAll("button[data-path]").forEach((b) => b.addEventListener("click", () => command(b)));
setInterval(updateBanner, 1000);
connect();
refresh();
