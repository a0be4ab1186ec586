// Tidal's console: three views over the console API (docs/CONTRACTS.md, "Console"), polled so it updates live.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";

const POLL_MS = 2000;
const API = "api/";
const view = document.getElementById("view");
const status = document.getElementById("status");
const state = { token: localStorage.getItem("tidal.token") || "", actions: [], authenticated: false, charts: null, chartsFor: null, timer: null, seq: 0 };

// ---------- helpers
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }));
const money = (v) => (v === null || v === undefined ? "–" : "$" + Number(v).toFixed(Number(v) < 10 ? 3 : 2));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(0) + "%");
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
function age(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return Math.round(s) + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return (s / 3600).toFixed(1) + "h";
  return Math.round(s / 86400) + "d";
}
const billing = (b) => (b ? `<span class="badge ${b === "spot" ? "spot" : "ondemand"}" data-billing="${esc(b)}">${b === "spot" ? "spot" : "on-demand"}</span>` : "–");
// Re-render a part only when its markup changed: no flicker, and selections and element handles survive polls.
function setHTML(el, html) {
  if (el.__html !== html) { el.innerHTML = html; el.__html = html; }
}
const stateBadge = (s) => `<span class="state state-${esc(String(s).toLowerCase())}">${esc(s)}</span>`;

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const resp = await fetch(API + path, { ...opts, headers, cache: "no-store" });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
  return body;
}

function setStatus(text, bad = false) {
  status.textContent = text;
  status.className = bad ? "bad" : "";
  document.getElementById("live").className = bad ? "live stale" : "live";
}

// ---------- session (token: read-only without, actions with)
async function refreshSession() {
  try {
    const s = await api("session");
    state.authenticated = s.authenticated;
    state.actions = s.authenticated ? s.actions : [];
  } catch (e) {
    state.authenticated = false;
    state.actions = [];
  }
  const mode = document.getElementById("mode");
  mode.textContent = state.authenticated ? "actions enabled" : state.token ? "token rejected: read-only" : "read-only";
  mode.className = "mode" + (state.authenticated ? " on" : "");
}

document.getElementById("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  state.token = document.getElementById("token").value.trim();
  if (state.token) localStorage.setItem("tidal.token", state.token);
  else localStorage.removeItem("tidal.token");
  await refreshSession();
  tick();
});

// ---------- views
function servicesView(data) {
  const rows = data.services.map((s) => `
    <tr data-service="${esc(s.name)}">
      <td><a href="#/services/${encodeURIComponent(s.name)}">${esc(s.name)}</a></td>
      <td>${esc(s.model)}</td><td>${esc(s.version)}</td><td>${esc(s.runtime)}</td>
      <td class="n" data-testid="replicas">${s.replicas.ready}/${s.replicas.desired}${s.scaled_to_zero ? ' <span class="muted">scaled to zero</span>' : ""}${s.queued ? ` <span class="muted">${s.queued} queued</span>` : ""}</td>
      <td class="n">${num(s.qps)}</td>
      <td class="n">${num(s.latency_ms.p50, 2)}</td><td class="n">${num(s.latency_ms.p99, 2)}</td>
      <td class="n">${money(s.cost_per_hour)}</td>
      <td class="n savings">${pct(s.savings)}</td>
    </tr>`).join("");
  const t = data.totals;
  setHTML(view, `
    <h1>Services</h1>
    <div class="cards">
      <div class="card"><div class="k">services</div><div class="v">${t.services}</div></div>
      <div class="card"><div class="k">cost per hour</div><div class="v">${money(t.cost_per_hour)}</div></div>
      <div class="card"><div class="k">all on-demand would be</div><div class="v">${money(t.on_demand_cost_per_hour)}</div></div>
      <div class="card"><div class="k">savings</div><div class="v savings">${pct(t.savings)}</div></div>
    </div>
    <table class="grid" data-testid="services">
      <thead><tr><th>Name</th><th>Model</th><th>Version</th><th>Runtime</th><th class="n">Replicas ready/desired</th><th class="n">QPS</th>
      <th class="n">p50 ms</th><th class="n">p99 ms</th><th class="n">Cost/h</th><th class="n">Savings vs on-demand</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="10" class="empty">No services yet: <code>tidal serve tensorflow ...</code></td></tr>`}</tbody>
    </table>`);
}

// 24-hour clock labels; seconds only when the chart spans less than ten minutes.
const pad = (n) => String(n).padStart(2, "0");
function timeLabels(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  return splits.map((v) => {
    const d = new Date(v * 1000);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (span < 600 ? ":" + pad(d.getSeconds()) : "");
  });
}

function chartOpts(title, series, width) {
  return {
    title, width, height: 200,
    scales: { x: { time: true } },
    axes: [{ stroke: "#9aa4b2", grid: { stroke: "#eef0f3" }, values: timeLabels, space: 70 }, { stroke: "#9aa4b2", grid: { stroke: "#eef0f3" }, size: 56 }],
    series: [{}, ...series.map((s) => ({ spanGaps: false, width: 2, points: { show: false }, ...s }))],
    legend: { live: false },
  };
}

const CHARTS = [
  { id: "qps", title: "Requests per second", series: [{ label: "QPS", stroke: "#2563eb", fill: "rgba(37,99,235,.08)" }], cols: ["qps"] },
  { id: "latency", title: "Latency (ms)", series: [{ label: "p50", stroke: "#16a34a" }, { label: "p99", stroke: "#dc2626" }], cols: ["p50_ms", "p99_ms"] },
  { id: "replicas", title: "Replicas by billing", series: [{ label: "spot", stroke: "#0d9488", fill: "rgba(13,148,136,.12)", paths: uPlot.paths.stepped({ align: 1 }) }, { label: "on-demand", stroke: "#7c3aed", fill: "rgba(124,58,237,.10)", paths: uPlot.paths.stepped({ align: 1 }) }], cols: ["replicas_spot", "replicas_on_demand"] },
  { id: "cost", title: "Cost per hour ($)", series: [{ label: "cost/h", stroke: "#d97706", fill: "rgba(217,119,6,.08)" }], cols: ["cost_per_hour"] },
];

function detailSkeleton(name) {
  view.__html = null;
  view.innerHTML = `
    <p class="crumbs"><a href="#/">Services</a> / <span>${esc(name)}</span></p>
    <h1 data-testid="service-name">${esc(name)}</h1>
    <div id="summary" class="cards"></div>
    <div id="actions"></div>
    <div id="rollout"></div>
    <div class="charts">${CHARTS.map((c) => `<div class="chart" id="chart-${c.id}" data-testid="chart-${c.id}"></div>`).join("")}</div>
    <h2>Replicas</h2><div id="replicas"></div>
    <div class="two">
      <div><h2>Autoscaler decisions</h2><div id="decisions"></div></div>
      <div><h2>Scaling and preemption events</h2><div id="events"></div></div>
    </div>`;
  const width = Math.max(280, view.querySelector(".chart").clientWidth - 8);
  state.charts = CHARTS.map((c) => new uPlot(chartOpts(c.title, c.series, width), [[], ...c.cols.map(() => [])], document.getElementById("chart-" + c.id)));
  state.chartsFor = name;
}

function detailView(name, d) {
  if (state.chartsFor !== name || !document.getElementById("summary")) detailSkeleton(name);
  const s = d.service;
  const spot = d.replicas.filter((r) => r.billing === "spot").length;
  const od = d.replicas.filter((r) => r.billing === "on-demand").length;
  setHTML(document.getElementById("summary"), `
    <div class="card"><div class="k">model</div><div class="v sm">${esc(s.model)} v${esc(s.version)} · ${esc(s.runtime)}</div></div>
    <div class="card"><div class="k">replicas ready/desired</div><div class="v" data-testid="replica-count">${s.replicas.ready}/${s.replicas.desired}</div><div class="sub">${spot} spot · ${od} on-demand</div></div>
    <div class="card"><div class="k">QPS</div><div class="v">${num(s.qps)}</div></div>
    <div class="card"><div class="k">p50 / p99</div><div class="v sm">${num(s.latency_ms.p50, 2)} / ${num(s.latency_ms.p99, 2)} ms</div></div>
    <div class="card"><div class="k">cost per hour</div><div class="v">${money(s.cost_per_hour)}</div><div class="sub">on-demand only: ${money(s.on_demand_cost_per_hour)}</div></div>
    <div class="card"><div class="k">savings</div><div class="v savings">${pct(s.savings)}</div></div>`);
  const acts = document.getElementById("actions");
  if (state.actions.includes("scale")) {
    if (!acts.querySelector("form")) {
      acts.innerHTML = `<form class="act" data-testid="scale-form">Scale to <input name="replicas" type="number" min="0" value="${s.replicas.desired}" size="4"> replicas <button>Apply</button> <span class="msg"></span></form>`;
      acts.querySelector("form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const msg = acts.querySelector(".msg");
        try {
          const r = await api(`services/${encodeURIComponent(name)}/scale`, { method: "POST", body: JSON.stringify({ replicas: Number(ev.target.replicas.value) }) });
          msg.textContent = r.message || "done";
        } catch (e) { msg.textContent = e.message; }
      });
    }
  } else acts.innerHTML = "";

  setHTML(document.getElementById("rollout"), rolloutView(d.rollout));

  setHTML(document.getElementById("replicas"), `<table class="grid" data-testid="replicas">
    <thead><tr><th>Replica</th><th>Node</th><th>Instance type</th><th>Zone</th><th>Billing</th><th>State</th><th class="n">Age</th></tr></thead>
    <tbody>${d.replicas.map((r) => `<tr data-replica="${esc(r.name)}"><td>${esc(r.name)}</td><td>${esc(r.node ?? "–")}</td><td>${esc(r.instance_type ?? "–")}</td><td>${esc(r.zone ?? "–")}</td><td>${billing(r.billing)}</td><td>${stateBadge(r.state)}</td><td class="n">${age(r.age_seconds)}</td></tr>`).join("") || `<tr><td colspan="7" class="empty">No replicas</td></tr>`}</tbody></table>`);

  setHTML(document.getElementById("decisions"), `<table class="grid compact" data-testid="decisions">
    <thead><tr><th>Time</th><th class="n">Replicas</th><th>Reason</th><th>Message</th></tr></thead>
    <tbody>${d.decisions.slice(0, 12).map((x) => `<tr><td class="nw">${clock(x.time)}</td><td class="n nw">${x.current_replicas} → ${x.desired_replicas}</td><td class="nw"><code>${esc(x.reason)}</code></td><td>${esc(x.message)}</td></tr>`).join("") || `<tr><td colspan="4" class="empty">No decisions yet</td></tr>`}</tbody></table>`);

  setHTML(document.getElementById("events"), `<table class="grid compact" data-testid="events">
    <thead><tr><th>Time</th><th>Kind</th><th>Object</th><th>Message</th></tr></thead>
    <tbody>${d.events.slice(0, 15).map((e) => `<tr class="ev-${esc(e.kind.toLowerCase())}"><td class="nw">${clock(e.time)}</td><td class="nw"><span class="kind">${esc(e.kind)}</span></td><td class="obj">${esc(e.object)}</td><td>${esc(e.message)}</td></tr>`).join("") || `<tr><td colspan="4" class="empty">No events</td></tr>`}</tbody></table>`);

  const ser = d.series;
  CHARTS.forEach((c, i) => state.charts[i].setData([ser.t, ...c.cols.map((k) => ser[k])]));
}

function rolloutView(r) {
  if (!r) return "";
  const guards = Object.entries(r.guards).filter(([, v]) => v !== null).map(([k, v]) => `<code>${esc(k.replace(/_/g, " "))} ${esc(v)}</code>`).join(" ");
  const steps = r.steps.length ? `steps ${r.steps.map((p, i) => (i === r.step && r.phase === "progressing" ? `<b>${p}%</b>` : `${p}%`)).join(" → ")} · bake ${num(r.bake_seconds, 0)}s` : "weights set by hand";
  const rows = r.releases.map((x) => {
    const c = x.counts;
    const errors = c ? `${c.errors}/${c.requests}` : "–";
    const classes = c && Object.keys(c.classes).length ? Object.entries(c.classes).map(([k, v]) => `${esc(k)}: ${v}`).join(", ") : "–";
    return `<tr data-release="${esc(x.name)}"><td>${esc(x.name)}</td><td>${esc(x.model_path)}</td><td class="n">${bar(x.weight / 100)}</td><td class="n">${x.ready}/${x.replicas}</td><td class="n">${errors}</td><td class="n">${c && c.p90_ms !== null ? num(c.p90_ms, 1) + " ms" : "–"}</td><td>${classes}</td></tr>`;
  }).join("");
  return `<h2>Releases</h2><p class="rollout rollout-${esc(r.phase)}" data-testid="rollout-progress"><span class="kind">${esc(r.phase)}</span> ${esc(r.progress)} · ${steps}</p>
    <table class="grid" data-testid="releases"><thead><tr><th>Release</th><th>Model</th><th class="n">Weight</th><th class="n">Ready</th><th class="n">Errors</th><th class="n">p90</th><th>Classes</th></tr></thead><tbody>${rows}</tbody></table>
    <p class="sub">Guards: ${guards || "none"}</p>`;
}

function bar(frac) {
  if (frac === null || frac === undefined) return "–";
  const p = Math.round(100 * frac);
  return `<span class="bar"><span style="width:${Math.min(100, p)}%"></span></span> ${p}%`;
}

function nodepoolsView(data) {
  setHTML(view, `<h1>Node pools</h1>` + (data.pools.map((p) => {
    const zones = Object.entries(p.by_zone);
    const policy = Object.entries(p.policy).map(([k, v]) => `<tr><th>${esc(k.replace(/_/g, " "))}</th><td>${esc(typeof v === "object" ? JSON.stringify(v) : v)}</td></tr>`).join("");
    const labels = Object.entries(p.labels).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ");
    const canPreempt = state.actions.includes("preempt");
    return `<section class="pool" data-pool="${esc(p.name)}">
      <h2>${esc(p.name)} <span class="labels">${labels}</span></h2>
      <div class="two">
        <div>
          <div class="cards">
            <div class="card"><div class="k">nodes</div><div class="v">${p.nodes.length}</div><div class="sub">${p.billing.spot} spot · ${p.billing["on-demand"]} on-demand</div></div>
            <div class="card"><div class="k">cost per hour</div><div class="v">${money(p.cost_per_hour)}</div></div>
            <div class="card"><div class="k">CPU used</div><div class="v sm">${bar(p.utilization.cpu)}</div></div>
            <div class="card"><div class="k">memory used</div><div class="v sm">${bar(p.utilization.memory)}</div></div>
          </div>
          <table class="grid compact zones" data-testid="zones"><thead><tr><th>Zone</th><th class="n">spot</th><th class="n">on-demand</th></tr></thead>
            <tbody>${zones.map(([z, c]) => `<tr data-zone="${esc(z)}"><td>${esc(z)}</td><td class="n">${c.spot}</td><td class="n">${c["on-demand"]}</td></tr>`).join("") || `<tr><td colspan="3" class="empty">No nodes</td></tr>`}</tbody></table>
        </div>
        <div><h3>Policy</h3><table class="kv" data-testid="policy">${policy || `<tr><td class="empty">none</td></tr>`}</table></div>
      </div>
      <table class="grid" data-testid="nodes"><thead><tr><th>Node</th><th>Zone</th><th>Instance type</th><th>Billing</th><th>State</th><th class="n">$/h</th><th>CPU</th><th>Memory</th><th>Replicas</th>${canPreempt ? "<th></th>" : ""}</tr></thead>
      <tbody>${p.nodes.map((n) => `<tr data-node="${esc(n.name)}"><td>${esc(n.name)}</td><td>${esc(n.zone)}</td><td>${esc(n.instance_type)}</td><td>${billing(n.billing)}</td><td>${stateBadge(n.state)}</td><td class="n">${money(n.price_per_hour)}</td>
        <td>${n.cpu ? bar(n.cpu.total ? n.cpu.used / n.cpu.total : 0) : "–"}</td><td>${n.memory_mb ? bar(n.memory_mb.total ? n.memory_mb.used / n.memory_mb.total : 0) : "–"}</td>
        <td>${n.replicas.map(esc).join(", ") || "–"}</td>${canPreempt ? `<td>${n.billing === "spot" ? `<button class="preempt" data-node="${esc(n.name)}">preempt</button>` : ""}</td>` : ""}</tr>`).join("")}</tbody></table>
    </section>`;
  }).join("") || `<p class="empty">No node pools yet: <code>tidal nodepool create ...</code></p>`));
}

// One listener for the preempt buttons, which come and go with each render.
view.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button.preempt");
  if (!b) return;
  try {
    const r = await api(`nodes/${encodeURIComponent(b.dataset.node)}/preempt`, { method: "POST", body: JSON.stringify({ notice_seconds: 30 }) });
    setStatus(r.message || "preemption requested");
  } catch (e) { setStatus(e.message, true); }
});

// ---------- routing and polling
function route() {
  const h = location.hash.replace(/^#\/?/, "");
  if (h.startsWith("services/")) return { name: "service", arg: decodeURIComponent(h.slice(9)) };
  if (h === "nodepools") return { name: "nodepools" };
  return { name: "services" };
}

async function tick() {
  const seq = ++state.seq;
  const r = route();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === (r.name === "nodepools" ? "nodepools" : "services")));
  try {
    if (r.name === "services") {
      const d = await api("overview");
      if (seq === state.seq) servicesView(d);
    } else if (r.name === "nodepools") {
      const d = await api("nodepools");
      if (seq === state.seq) nodepoolsView(d);
    } else {
      const d = await api("services/" + encodeURIComponent(r.arg));
      if (seq === state.seq) detailView(r.arg, d);
    }
    if (seq === state.seq) {
      document.body.dataset.updated = String(Date.now());
      setStatus("updated " + new Date().toLocaleTimeString([], { hour12: false }));
    }
  } catch (e) {
    if (seq === state.seq) setStatus("cannot update: " + e.message, true);
  }
}

function schedule() {
  clearTimeout(state.timer);
  // Polling pauses while the tab is hidden and catches up when it shows again.
  state.timer = setTimeout(async () => { if (!document.hidden) await tick(); schedule(); }, POLL_MS);
}

window.addEventListener("hashchange", () => { if (route().name !== "service") state.chartsFor = null; tick(); schedule(); });
document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
window.addEventListener("resize", () => {
  if (!state.charts || !document.querySelector(".chart")) return;
  const width = Math.max(280, document.querySelector(".chart").clientWidth - 8);
  state.charts.forEach((c) => c.setSize({ width, height: 200 }));
});

document.getElementById("token").value = state.token;
refreshSession().then(() => { tick(); schedule(); });
