// The usage view: a deployment's tokens over time as a chart, and for the account's
// admins a table per deployment and per key of requests, failures, tokens, spend and
// latency percentiles (GET /v4/usage-summary, over the same period).

import { apiJson } from "./api.js";
import { $, element, isAdmin, state, svgElement } from "./dom.js";

// How /v4/usage-summary names the keys it may not name one by one, and records
// written without a key.
const OTHER_KEYS = "other keys";

export function fillUsageDeployments() {
  const select = $("#usage-deployment");
  const chosen = select.value;
  select.replaceChildren(
    ...state.deployments.map((deployment) =>
      element("option", { value: deployment.id }, `${deployment.name} (${deployment.status})`),
    ),
  );
  if (state.deployments.some((deployment) => deployment.id === chosen)) select.value = chosen;
}

function period() {
  const hours = Number($("#usage-range").value);
  const end = new Date(Math.ceil(Date.now() / 60000) * 60000);
  const start = new Date(end.getTime() - hours * 3600 * 1000);
  return { hours, start, end };
}

export async function loadUsage() {
  const epoch = state.epoch;
  const { hours, start, end } = period();
  const range = { start_date: start.toISOString(), end_date: end.toISOString() };
  const deployment = $("#usage-deployment").value;
  const admin = isAdmin();
  const [usage, summary, keys] = await Promise.all([
    deployment
      ? apiJson(
          "GET",
          `/v4/model-deployments/${encodeURIComponent(deployment)}/usage-statistics?${new URLSearchParams({ ...range, chunks: "24" })}`,
        )
      : null,
    admin ? apiJson("GET", `/v4/usage-summary?${new URLSearchParams(range)}`) : null,
    admin ? apiJson("GET", "/v4/api-keys") : null,
  ]);
  if (epoch !== state.epoch) return; // the key or the account changed meanwhile
  if (usage) drawUsage(usage.data, hours);
  $("#usage-tables").hidden = !admin;
  $("#usage-for-admins").hidden = admin;
  if (summary) drawSummary(summary, keys);
}

// ---------------------------------------------------------------- the summary tables

const COLUMNS = ["requests", "failures", "prompt_tokens", "response_tokens", "spend", "p50", "p95", "p99"];

function cells(totals) {
  const latency = totals.latency_ms;
  const values = {
    ...totals,
    p50: latency ? latency.p50 : null,
    p95: latency ? latency.p95 : null,
    p99: latency ? latency.p99 : null,
  };
  return COLUMNS.map((column) => {
    const value = values[column];
    const shown = value === null ? "–" : column === "spend" ? `$${value.toFixed(6)}` : value.toLocaleString("en-US");
    return element("td", { class: "number", "data-column": column, "data-value": value === null ? "" : String(value) }, shown);
  });
}

function summaryRows(groups, nameOf) {
  return Object.entries(groups)
    .sort(([, a], [, b]) => b.requests - a.requests)
    .map(([id, totals]) => element("tr", { "data-id": id }, element("th", { scope: "row" }, nameOf(id)), ...cells(totals)));
}

function drawSummary(summary, keys) {
  const deploymentNames = new Map(state.deployments.map((deployment) => [deployment.id, deployment.name]));
  const keyNames = new Map((keys || []).map((key) => [key.id, `${key.name || "(unnamed)"} (${key.display_prefix}…)`]));
  $("#usage-deployments-table tbody").replaceChildren(
    ...summaryRows(summary.by_deployment, (id) => deploymentNames.get(id) || `${id} (deleted)`),
  );
  $("#usage-keys-table tbody").replaceChildren(
    ...summaryRows(summary.by_key, (id) =>
      id === OTHER_KEYS ? "other users' keys" : id === "" ? "(no key recorded)" : keyNames.get(id) || id,
    ),
  );
}

// ---------------------------------------------------------------- the chart

// Stacked bars, prompt tokens under response tokens, one bar per time chunk.
function drawUsage(points, hours) {
  const chart = $("#usage-chart");
  const width = 760;
  const height = 300;
  const left = 60;
  const bottom = 40;
  const top = 20;
  const plotHeight = height - bottom - top;
  const highest = Math.max(1, ...points.map((point) => point.prompt_tokens + point.response_tokens));
  const slot = (width - left - 10) / Math.max(points.length, 1);
  const scale = (tokens) => (tokens / highest) * plotHeight;
  const nodes = [
    svgElement("line", { x1: left, y1: top + plotHeight, x2: width - 10, y2: top + plotHeight, class: "axis" }),
    svgElement("text", { x: left - 6, y: top + 4, class: "label end" }, highest.toLocaleString()),
    svgElement("text", { x: left - 6, y: top + plotHeight, class: "label end" }, "0"),
  ];
  points.forEach((point, index) => {
    const x = left + index * slot + slot * 0.15;
    const barWidth = slot * 0.7;
    const promptHeight = scale(point.prompt_tokens);
    const responseHeight = scale(point.response_tokens);
    const when = new Date(point.date);
    const title = `${when.toLocaleString()}: ${point.prompt_tokens} prompt + ${point.response_tokens} response tokens`;
    for (const [y, barHeight, kind] of [
      [top + plotHeight - promptHeight, promptHeight, "prompt"],
      [top + plotHeight - promptHeight - responseHeight, responseHeight, "response"],
    ]) {
      const bar = svgElement("rect", { x, y, width: barWidth, height: barHeight, class: `bar ${kind}` });
      bar.append(svgElement("title", {}, title));
      nodes.push(bar);
    }
    if (index % Math.ceil(points.length / 6) === 0) {
      const label = hours > 24 ? when.toLocaleDateString() : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      nodes.push(svgElement("text", { x: x + barWidth / 2, y: height - bottom + 16, class: "label middle" }, label));
    }
  });
  nodes.push(
    svgElement("rect", { x: left, y: height - 14, width: 10, height: 10, class: "bar prompt" }),
    svgElement("text", { x: left + 14, y: height - 5, class: "label" }, "prompt tokens"),
    svgElement("rect", { x: left + 130, y: height - 14, width: 10, height: 10, class: "bar response" }),
    svgElement("text", { x: left + 144, y: height - 5, class: "label" }, "response tokens"),
  );
  chart.replaceChildren(...nodes);
  const prompt = points.reduce((sum, point) => sum + point.prompt_tokens, 0);
  const response = points.reduce((sum, point) => sum + point.response_tokens, 0);
  $("#usage-summary").textContent = `${prompt.toLocaleString()} prompt and ${response.toLocaleString()} response tokens in the period`;
}

export function clearUsage() {
  $("#usage-chart").replaceChildren();
  $("#usage-summary").textContent = "";
  $("#usage-deployments-table tbody").replaceChildren();
  $("#usage-keys-table tbody").replaceChildren();
}
