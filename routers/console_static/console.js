// llm-router console: polls /console/api/… and draws routes, traffic and recent requests.
// Hand-written, no dependencies. Everything shown is built with DOM calls (never innerHTML),
// so route names, prompts and error messages are shown as text, whatever they contain.
"use strict";

(() => {
  const KEY = "llm-router-admin-key";
  const PALETTE = ["#1d4ed8", "#b91c1c", "#15803d", "#7e22ce", "#c2410c", "#0e7490", "#a16207", "#be185d"];
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = Math.min(60, Math.max(0.25, Number(params.get("refresh")) || 2)) * 1000;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  let overviewData = null;
  let timer = null;

  // ---- DOM helpers -------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`);
  const ms = (x) => (x === null || x === undefined ? "–" : `${x >= 100 ? Math.round(x) : x.toFixed(1)} ms`);
  const usd = (x) => (x ? `$${x < 0.01 ? x.toPrecision(2) : x.toFixed(4)}` : "$0");
  const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"));

  function short(x) {
    if (x === null || x === undefined) return "–";
    const a = Math.abs(x);
    if (a >= 1e6) return `${(x / 1e6).toFixed(1)}M`;
    if (a >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
    if (a >= 10 || a === 0) return String(Math.round(x));
    if (a >= 0.01) return x.toFixed(2);
    return x.toPrecision(2);
  }

  // ---- talking to the gateway --------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(path, options = {}) {
    const key = sessionStorage.getItem(KEY);
    const headers = { ...(options.headers || {}) };
    if (key) headers.authorization = `Bearer ${key}`;
    if (options.body) headers["content-type"] = "application/json";
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) throw new Unauthorized();
    return response;
  }

  async function getJSON(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function boot() {
    stop();
    let session;
    try {
      session = await (await api("/console/session")).json();
    } catch (err) {
      $("status").textContent = "The gateway does not answer.";
      return;
    }
    for (const id of ["login", "disabled", "app", "sections"]) $(id).hidden = true;
    $("logout").hidden = !session.admin_key_required || !session.authorized;
    if (session.disabled) {
      $("disabled").hidden = false;
      $("status").textContent = "Disabled";
      return;
    }
    if (!session.authorized) {
      const tried = sessionStorage.getItem(KEY) !== null;
      sessionStorage.removeItem(KEY);
      $("login").hidden = false;
      $("login-error").textContent = tried ? "That key is not the admin key." : "";
      $("status").textContent = "Signed out";
      $("admin-key").focus();
      return;
    }
    $("app").hidden = false;
    $("sections").hidden = false;
    tick();
  }

  function stop() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  async function tick() {
    stop();
    try {
      const [overview, traffic, recent] = await Promise.all([
        getJSON("/console/api/overview"),
        getJSON("/console/api/traffic"),
        getJSON(`/console/api/requests?${filterQuery()}`),
      ]);
      overviewData = overview;
      renderOverview(overview);
      renderTraffic(traffic);
      renderRecent(recent);
      const when = new Date().toLocaleTimeString("en-GB");
      const up = overview.stats.uptime_s;
      $("status").textContent = `pid ${overview.pid} · up ${duration(up)} · updated ${when}`;
    } catch (err) {
      if (err instanceof Unauthorized) {
        boot();
        return;
      }
      $("status").textContent = `Not updated: ${err.message}`;
    }
    timer = setTimeout(tick, REFRESH_MS);
  }

  function duration(seconds) {
    if (seconds < 90) return `${Math.round(seconds)}s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
    return `${(seconds / 3600).toFixed(1)}h`;
  }

  // ---- traffic: key figures and charts ---------------------------------------------------

  function renderTraffic(data) {
    const n = data.t.length;
    $("traffic-span").textContent = `last ${Math.round((n * data.bucket_s) / 60)} minutes, ${data.bucket_s}s buckets`;
    const lastMinute = Math.max(1, Math.round(60 / data.bucket_s));
    const tail = (values) => values.slice(Math.max(0, n - lastMinute));
    const sum = (values) => values.reduce((a, b) => a + (b || 0), 0);
    const requests = sum(tail(data.rps)) * data.bucket_s;
    const errors = sum(tail(data.errors_per_s)) * data.bucket_s;
    const lastOf = (values) => {
      for (let i = values.length - 1; i >= Math.max(0, values.length - lastMinute); i--) {
        if (values[i] !== null) return values[i];
      }
      return null;
    };
    const cost = sum(data.models.map((m) => sum(m.cost_usd)));
    const kpis = [
      ["Requests / s (last minute)", short(requests / (lastMinute * data.bucket_s))],
      ["Error rate (last minute)", requests ? pct(errors / requests) : "–"],
      ["Latency p50", ms(lastOf(data.p50_ms))],
      ["Latency p95", ms(lastOf(data.p95_ms))],
      ["Cost (window)", usd(cost)],
    ];
    $("kpis").replaceChildren(...kpis.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v }))));

    const perMinute = 60 / data.bucket_s;
    const label = (m) => `${m.provider}/${m.model}`;
    drawChart($("chart-rps"), "Requests per second", data, [
      { name: "requests", values: data.rps },
      { name: "errors", values: data.errors_per_s },
    ], "/s");
    drawChart($("chart-latency"), "Latency", data, [
      { name: "p50", values: data.p50_ms },
      { name: "p95", values: data.p95_ms },
    ], " ms");
    drawChart($("chart-tokens"), "Tokens per second by provider/model", data,
      data.models.map((m) => ({ name: label(m), values: m.tokens.map((x) => x / data.bucket_s) })), "/s");
    drawChart($("chart-cost"), "Cost per minute by provider/model (USD)", data,
      data.models.map((m) => ({ name: label(m), values: m.cost_usd.map((x) => x * perMinute) })), "/min");
  }

  function drawChart(figure, title, data, series, unit) {
    const W = 480, H = 150, L = 42, R = 8, T = 8, B = 20;
    const n = data.t.length;
    let max = 0;
    for (const one of series) for (const v of one.values) if (v !== null && v > max) max = v;
    const top = niceCeiling(max);
    const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
    const y = (v) => T + (1 - v / top) * (H - T - B);

    const latest = series.map((one) => {
      const v = [...one.values].reverse().find((value) => value !== null);
      return `${one.name} ${v === undefined ? "none" : short(v) + unit}`;
    });
    const summary = series.length
      ? `${title}, over the last ${Math.round((n * data.bucket_s) / 60)} minutes; latest: ${latest.join(", ")}; peak ${short(max)}${unit}.`
      : `${title}: no traffic yet.`;
    const titleId = `${figure.id}-title`;
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId });
    const svgTitle = s("title", { id: titleId });
    svgTitle.textContent = summary;
    svg.append(svgTitle);

    for (const frac of [0, 0.5, 1]) {
      const gy = y(top * frac);
      svg.append(s("line", { x1: L, x2: W - R, y1: gy, y2: gy, class: frac === 0 ? "axis" : "grid" }));
      const text = s("text", { x: L - 4, y: gy + 3, "text-anchor": "end" });
      text.textContent = short(top * frac);
      svg.append(text);
    }
    const span = n * data.bucket_s;
    for (const [i, anchor, words] of [[0, "start", `-${Math.round(span / 60)}m`], [Math.floor((n - 1) / 2), "middle", `-${Math.round(span / 120)}m`], [n - 1, "end", "now"]]) {
      const text = s("text", { x: x(i), y: H - 5, "text-anchor": anchor });
      text.textContent = words;
      svg.append(text);
    }
    const moving = [];
    series.forEach((one, k) => {
      const color = PALETTE[k % PALETTE.length];
      let points = [];
      const flush = () => {
        if (points.length) {
          svg.append(s("polyline", { points: points.join(" "), stroke: color, "data-series": one.name }));
          moving.push(points.join(" "));
        }
        points = [];
      };
      one.values.forEach((v, i) => {
        if (v === null) flush();
        else points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      });
      flush();
    });
    svg.dataset.peak = String(max);

    const legend = h("ul", { class: "legend" },
      series.length
        ? series.map((one, k) => {
          const swatch = h("span", { class: "swatch", "aria-hidden": "true" });
          swatch.style.background = PALETTE[k % PALETTE.length];
          return h("li", {}, swatch, one.name);
        })
        : h("li", { class: "empty", text: "no traffic yet" }));
    figure.replaceChildren(h("figcaption", { text: title }), svg, legend);
  }

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  // ---- routes: each a tree ------------------------------------------------------------------

  function renderOverview(data) {
    const routesByName = Object.fromEntries(data.routes.map((r) => [r.name, r]));
    $("route-trees").replaceChildren(...data.routes.map((route) => {
      const stats = route.traffic;
      const ctx = { stats: stats.nodes, routes: routesByName, depth: 0 };
      return h("div", { class: "route", "data-route": route.name },
        h("h3", {}, route.name, " ", h("span", { class: "muted", text: `${num(stats.requests)} recent requests` })),
        h("ul", { class: "tree", "aria-label": `Route ${route.name}` }, renderNode(route.tree, null, ctx, null)));
    }));
    fillSelect($("try-route"), data.routes.map((r) => r.name), false);
    renderPerformance(data.stats);
  }

  function meter(stat) {
    if (!stat) return h("span", { class: "meter muted", text: "no recent traffic" });
    const bar = h("span", {});
    bar.style.width = `${Math.round(stat.share * 100)}%`;
    const rateClass = stat.error_rate > 0 ? "rate-bad" : "rate-ok";
    return h("span", { class: "meter" },
      h("span", { class: "bar", role: "img", "aria-label": `${pct(stat.share)} of the route's requests` }, bar),
      h("span", { text: pct(stat.share) }),
      h("span", { class: rateClass, text: `${pct(stat.error_rate)} errors` }));
  }

  // The children of a described node, each with the label of the edge that leads to it.
  function childrenOf(desc) {
    switch (desc.policy) {
      case "classify":
        return [...Object.entries(desc.branches || {}).map(([k, v]) => [k, v]), ["otherwise", desc.otherwise]];
      case "cost_threshold":
        return [[`below ${desc.threshold}`, desc.below], [`at or above ${desc.threshold}`, desc.above]];
      case "ab_split": {
        const variants = Object.entries(desc.variants || {});
        const total = variants.reduce((a, [, v]) => a + v.weight, 0) || 1;
        return variants.map(([k, v]) => [`${k} · ${pct(v.weight / total)}`, v.to]);
      }
      case "failover":
        return (desc.children || []).map((child, i) => [`#${i + 1}`, child]);
      case "match":
        return (desc.rules || []).map((rule) => [rule.when ? `when ${JSON.stringify(rule.when)}` : "default", rule.to]);
      default: {
        // A policy this console does not know: any nested node, under its key.
        const found = [];
        for (const [k, v] of Object.entries(desc)) {
          if (v && typeof v === "object" && !Array.isArray(v) && "path" in v) found.push([k, v]);
          if (Array.isArray(v)) v.forEach((c, i) => c && typeof c === "object" && "path" in c && found.push([`${k} ${i + 1}`, c]));
        }
        return found;
      }
    }
  }

  function policyDetail(desc) {
    switch (desc.policy) {
      case "classify": return `by ${desc.by}`;
      case "cost_threshold": return `scorer ${desc.scorer}, threshold ${desc.threshold}`;
      case "ab_split": return desc.sticky ? `sticky on ${desc.sticky}` : "random split";
      case "failover": return `retries ${desc.retries}` + (Object.keys(desc.breakers || {}).length ? ", circuit breakers" : "");
      default: return "";
    }
  }

  function renderNode(desc, edge, ctx, breaker) {
    const li = h("li", { "data-path": desc.path });
    const edgeLabel = edge ? h("span", { class: "edge", text: edge }) : null;
    let card;
    let children = [];
    if (desc.route !== undefined) {
      const ref = ctx.routes[desc.route];
      const root = ref ? ref.tree : null;
      card = h("span", { class: "node ref" }, edgeLabel, h("span", { class: "kind", text: "route" }),
        h("span", { class: "name", text: desc.route }), meter(root ? ctx.stats[root.path] : null));
      if (root && ctx.depth < 8) children = [renderNode(root, null, { ...ctx, depth: ctx.depth + 1 }, null)];
    } else if (desc.target !== undefined) {
      card = h("span", { class: "node target", "data-target": desc.target }, edgeLabel,
        h("span", { class: "kind", text: "target" }),
        h("span", { class: "name", text: desc.target }),
        h("span", { class: "detail mono", text: `${desc.provider}/${desc.model}` }),
        meter(ctx.stats[desc.path]),
        breaker ? h("span", { class: `breaker ${breaker}`, "data-breaker": breaker, text: `breaker ${breaker.replace("_", "-")}` }) : null);
    } else {
      card = h("span", { class: "node policy" }, edgeLabel,
        h("span", { class: "kind", text: "policy" }),
        h("span", { class: "name", text: desc.policy || desc.label }),
        h("span", { class: "detail", text: policyDetail(desc) }),
        meter(ctx.stats[desc.path]));
      children = childrenOf(desc).map(([label, child]) => {
        const state = desc.policy === "failover" ? (desc.breakers || {})[child.label] : null;
        return renderNode(child, label, ctx, state);
      });
    }
    li.append(card);
    if (children.length) li.append(h("ul", {}, children));
    return li;
  }

  // ---- the per-model performance table ----------------------------------------------------

  function renderPerformance(stats) {
    const period = $("perf-period").value;
    const head = h("tr", {}, ["Provider", "Model", "Requests", "Errors", "Success", "p50", "p95", "Avg", "Tokens", "Cost"]
      .map((c, i) => h("th", { scope: "col", class: i > 1 ? "num" : null, text: c })));
    const rows = stats.models.map((m) => {
      const b = m[period];
      return h("tr", {},
        h("td", { text: m.provider }), h("td", { class: "mono", text: m.model }),
        h("td", { class: "num", text: num(b.requests) }), h("td", { class: "num", text: num(b.errors) }),
        h("td", { class: "num", text: pct(b.success_rate) }),
        h("td", { class: "num", text: ms(b.latency_ms.p50) }), h("td", { class: "num", text: ms(b.latency_ms.p95) }),
        h("td", { class: "num", text: ms(b.latency_ms.avg) }),
        h("td", { class: "num", text: num(b.tokens.total) }), h("td", { class: "num", text: usd(b.cost_usd) }));
    });
    const caption = h("caption", { class: "muted", text: period === "recent" ? `last ${stats.window_s / 60} minutes, per upstream attempt` : "since the gateway started, per upstream attempt" });
    const body = rows.length ? rows : [h("tr", {}, h("td", { colspan: 10, class: "empty", text: "no upstream calls yet" }))];
    $("perf-table").replaceChildren(caption, h("thead", {}, head), h("tbody", {}, body));
  }

  // ---- recent requests ------------------------------------------------------------------------

  function filterQuery() {
    const q = new URLSearchParams();
    for (const [name, id] of [["route", "filter-route"], ["provider", "filter-provider"], ["outcome", "filter-outcome"]]) {
      const v = $(id).value;
      if (v) q.set(name, v);
    }
    return q.toString();
  }

  function fillSelect(select, values, withAll = true) {
    const current = select.value;
    const wanted = (withAll ? [""] : []).concat(values);
    const have = [...select.options].map((o) => o.value);
    if (wanted.length === have.length && wanted.every((v, i) => v === have[i])) return;
    select.replaceChildren(...wanted.map((v) => h("option", { value: v, text: v || "all" })));
    if (wanted.includes(current)) select.value = current;
  }

  function decisionPath(decisions) {
    return decisions.filter((d) => d.policy !== "adapter").map((d) => `${d.policy}: ${d.outcome}`).join(" › ") || "—";
  }

  function renderRecent(data) {
    fillSelect($("filter-route"), data.facets.routes);
    fillSelect($("filter-provider"), data.facets.providers);
    $("recent-count").textContent = `(${data.requests.length} shown, newest first)`;
    const head = h("tr", {}, ["Time", "Route", "Target", "Outcome", "Decisions", "Attempts", "Latency", "Tokens", "Cost", "Trace id"]
      .map((c) => h("th", { scope: "col", class: ["Latency", "Tokens", "Cost"].includes(c) ? "num" : null, text: c })));
    const rows = data.requests.map((r) => {
      const attempts = h("span", { class: "attempts" }, r.attempts.map((a, i) => [
        i ? " → " : "",
        h("span", { class: a.ok ? null : "failed", title: `${a.provider}/${a.model}: ${a.ok ? "ok" : a.error + (a.status ? " " + a.status : "")}, ${ms(a.latency_ms)}` },
          `${a.target} ${a.ok ? "ok" : a.error}`),
      ]));
      const detail = h("details", {},
        h("summary", { class: "path", text: decisionPath(r.decisions) }),
        h("pre", { class: "mono", text: JSON.stringify(r.decisions, null, 1) }),
        r.prompt ? h("p", { class: "prompt", text: `Prompt: ${r.prompt}` }) : null);
      return h("tr", { class: r.outcome === "ok" ? null : "error" },
        h("td", { class: "mono", text: r.at.slice(11, 23) }),
        h("td", { text: r.route }),
        h("td", {}, r.target || "—", r.provider ? h("div", { class: "detail mono", text: `${r.provider}/${r.model}` }) : null),
        h("td", { class: `outcome-${r.outcome}`, text: r.outcome === "ok" ? "ok" : `error ${r.status}` }),
        h("td", {}, detail),
        h("td", {}, r.attempts.length ? attempts : "none"),
        h("td", { class: "num", text: ms(r.latency_ms) }),
        h("td", { class: "num", text: num(r.tokens.input + r.tokens.output) }),
        h("td", { class: "num", text: usd(r.cost_usd) }),
        h("td", { class: "mono", text: r.trace_id || "—" }));
    });
    const body = rows.length ? rows : [h("tr", {}, h("td", { colspan: 10, class: "empty", text: "no requests match" }))];
    $("recent-table").replaceChildren(h("thead", {}, head), h("tbody", {}, body));
  }

  // ---- try it ---------------------------------------------------------------------------------

  async function tryIt(event) {
    event.preventDefault();
    const button = $("try-send");
    button.disabled = true;
    const out = $("try-result");
    out.replaceChildren(h("p", { class: "muted", text: "Sending…" }));
    try {
      const response = await api("/console/api/try", {
        method: "POST",
        body: JSON.stringify({
          route: $("try-route").value,
          prompt: $("try-prompt").value,
          dry_run: $("try-dry-run").checked,
        }),
      });
      const data = await response.json();
      out.replaceChildren(...tryResult(data, response.status));
    } catch (err) {
      if (err instanceof Unauthorized) boot();
      else out.replaceChildren(h("p", { class: "error", text: `Failed: ${err.message}` }));
    } finally {
      button.disabled = false;
    }
  }

  function tryResult(data, status) {
    if (!data.decisions) {  // refused before routing: an unknown route, an invalid body
      return [h("p", { class: "error", text: `HTTP ${status}: ${(data.error && data.error.message) || "refused"}` })];
    }
    const parts = [];
    if (data.error) {
      parts.push(h("p", { class: "outcome-error", text: `HTTP ${status} ${data.error.type}: ${data.error.message}` }));
    } else {
      const cost = data.dry_run ? `estimated ${usd(data.estimated_cost_usd)}` : usd(data.cost_usd);
      parts.push(h("p", {},
        h("span", { class: "outcome-ok", text: data.dry_run ? "Dry run → " : "Answered by " }),
        h("strong", { text: data.target }), ` (${data.provider}/${data.model}) · ${cost} · ${ms(data.latency_ms)}`));
    }
    parts.push(h("h3", { text: "Decisions" }));
    parts.push(h("ol", { id: "try-decisions" }, data.decisions.length
      ? data.decisions.map((d) => h("li", {},
        h("strong", { text: d.policy }), " at ", h("code", { text: d.at }), " → ", h("strong", { text: d.outcome }),
        Object.keys(d.detail).length ? h("pre", { text: JSON.stringify(d.detail, null, 1) }) : null))
      : h("li", { class: "muted", text: "none: the route is a single target" })));
    if (data.message) parts.push(h("h3", { text: "Answer" }), h("pre", { text: data.message }));
    if (data.trace_id) parts.push(h("p", { class: "muted" }, "Trace id ", h("code", { text: data.trace_id })));
    return parts;
  }

  // ---- wiring ---------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("admin-key").value);
      $("admin-key").value = "";
      boot();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      boot();
    });
    $("try-form").addEventListener("submit", tryIt);
    $("filters").addEventListener("change", () => tick());
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("perf-period").addEventListener("change", () => overviewData && renderPerformance(overviewData.stats));
    boot();
  });
})();
