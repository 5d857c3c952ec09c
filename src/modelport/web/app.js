// The modelport page: a playground and views of the catalogue, keys and usage.
// Plain browser JavaScript, no build step. The API key is kept in sessionStorage (gone
// when the tab closes) and sent only as the x-api-key header, never in a URL.
"use strict";

const KEY_STORAGE = "modelport.api-key";
const SVG = "http://www.w3.org/2000/svg";
const $ = (selector) => document.querySelector(selector);

const state = {
  history: [], // finished turns of the conversation: {role, content}
  controller: null, // aborts the answer being streamed
  deployments: [],
  textDeployments: [],
};

// ---------------------------------------------------------------- the API

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

function describeDetail(body, fallback) {
  if (!body || body.detail === undefined) return fallback;
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) {
    return body.detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
  }
  return JSON.stringify(body.detail);
}

async function api(method, path, body, signal) {
  const headers = { "x-api-key": apiKey() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch (_) {
      // not JSON: the status line says enough
    }
    throw new ApiError(response.status, describeDetail(parsed, response.statusText));
  }
  return response;
}

async function apiJson(method, path, body) {
  return (await api(method, path, body)).json();
}

async function allPages(path) {
  const items = [];
  for (let page = 1; ; page += 1) {
    const found = await apiJson("GET", `${path}?limit=1000&page=${page}`);
    items.push(...found.items);
    if (items.length >= found.total_item_count || found.items.length === 0) return items;
  }
}

// Server-sent events from a fetch body: yields {event, data} per event.
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

// ---------------------------------------------------------------- small DOM helpers

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function svgElement(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function notify(message, isError = true) {
  const notice = $("#notice");
  notice.textContent = message;
  notice.className = isError ? "error" : "info";
  notice.hidden = !message;
}

function reportFailure(error) {
  if (error.name === "AbortError") return;
  if (error.status === 401) notify("The API key was refused (401): paste a valid key above.");
  else notify(error.message);
}

// ---------------------------------------------------------------- key and tabs

function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== name;
  if (!apiKey()) {
    notify("Paste an API key to start (the key printed at first start, or one made with `modelport keys create`).");
    return;
  }
  const showUsage = async () => {
    await loadDeployments();
    await loadUsage();
  };
  const loaders = { playground: loadDeployments, catalogue: loadCatalogue, keys: loadKeys, usage: showUsage };
  loaders[name]().catch(reportFailure);
}

function currentView() {
  const selected = document.querySelector('.tab[aria-selected="true"]');
  return selected ? selected.dataset.view : "playground";
}

function useKey(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  clearViews();
  $("#api-key").value = "";
  $("#api-key").placeholder = "key in use (this tab only)";
  notify("");
  showView(currentView());
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  $("#api-key").placeholder = "paste an x-api-key";
  clearViews();
  showView(currentView());
}

// What one key saw must not stay on screen under another key (or none): every list,
// the chart and the conversation are emptied when the key changes.
function clearViews() {
  state.deployments = [];
  state.textDeployments = [];
  fillDeploymentChoices();
  for (const body of document.querySelectorAll("main table tbody")) body.replaceChildren();
  $("#usage-chart").replaceChildren();
  $("#usage-summary").textContent = "";
  $("#new-key").hidden = true;
  $("#new-key-value").textContent = "";
  clearChat();
}

// ---------------------------------------------------------------- catalogue

// The playground chats, so it offers the deployments of models that generate text;
// usage can be drawn for every deployment (embeddings count tokens too).
const TEXT_MODEL_TYPES = new Set(["CHAT_COMPLETION", "COMPLETION"]);

async function loadDeployments() {
  const [models, deployments] = await Promise.all([allPages("/v4/models"), allPages("/v4/model-deployments")]);
  const textModels = new Set(models.filter((model) => TEXT_MODEL_TYPES.has(model.model_type)).map((model) => model.id));
  state.deployments = deployments;
  state.textDeployments = deployments.filter((deployment) => textModels.has(deployment.model_instance_id));
  fillDeploymentChoices();
  notify("");
}

function fillDeploymentChoices() {
  for (const [select, choices] of [
    [$("#deployment"), state.textDeployments],
    [$("#usage-deployment"), state.deployments],
  ]) {
    const chosen = select.value;
    select.replaceChildren(
      ...choices.map((deployment) =>
        element("option", { value: deployment.id }, `${deployment.name} (${deployment.status})`),
      ),
    );
    if (choices.some((deployment) => deployment.id === chosen)) select.value = chosen;
  }
}

function statusBadge(status) {
  return element("span", { class: `status status-${status.toLowerCase()}` }, status);
}

async function loadCatalogue() {
  const [models, deployments] = await Promise.all([allPages("/v4/models"), allPages("/v4/model-deployments")]);
  state.deployments = deployments;
  fillDeploymentChoices();
  const modelNames = new Map(models.map((model) => [model.id, model.name]));
  $("#models-table tbody").replaceChildren(
    ...models.map((model) =>
      element(
        "tr",
        {},
        element("td", {}, model.display_name || model.name, element("div", { class: "id" }, model.name)),
        element("td", {}, model.model_type),
        element("td", {}, model.model_vendor || ""),
        element("td", {}, String(model.deployment_count)),
        element("td", { class: "id" }, model.id),
      ),
    ),
  );
  $("#deployments-table tbody").replaceChildren(
    ...deployments.map((deployment) => {
      const reason = (deployment.deployment_metadata || {}).status_reason;
      const status = element("td", {}, statusBadge(deployment.status));
      if (reason) status.title = reason;
      return element(
        "tr",
        {},
        element("td", {}, deployment.name),
        status,
        element("td", {}, modelNames.get(deployment.model_instance_id) || deployment.model_instance_id || ""),
        element("td", { class: "id" }, deployment.id),
      );
    }),
  );
  notify("");
}

// ---------------------------------------------------------------- keys

async function loadKeys() {
  const keys = await apiJson("GET", "/v4/api-keys");
  $("#keys-table tbody").replaceChildren(
    ...keys.map((key) => {
      const revoke = element("button", { type: "button", class: "revoke", "data-key-id": key.id }, "Revoke");
      revoke.disabled = Boolean(key.revoked_at);
      revoke.addEventListener("click", () => revokeKey(key).catch(reportFailure));
      return element(
        "tr",
        { "data-key-id": key.id },
        element("td", {}, key.name || "(unnamed)"),
        element("td", { class: "id" }, `${key.display_prefix}…`),
        element("td", {}, key.role),
        element("td", {}, new Date(key.created_at).toLocaleString()),
        element("td", { class: "key-state" }, key.revoked_at ? "revoked" : "active"),
        element("td", {}, revoke),
      );
    }),
  );
  notify("");
}

async function createKey(event) {
  event.preventDefault();
  try {
    const created = await apiJson("POST", "/v4/api-keys", {
      name: $("#new-key-name").value.trim(),
      role: $("#new-key-role").value,
    });
    $("#new-key-value").textContent = created.key;
    $("#new-key").hidden = false;
    $("#new-key-name").value = "";
    await loadKeys();
  } catch (error) {
    reportFailure(error);
  }
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke the key "${key.name || key.display_prefix}"? Programs using it stop working.`)) return;
  await api("DELETE", `/v4/api-keys/${encodeURIComponent(key.id)}`);
  await loadKeys();
}

function dismissNewKey() {
  $("#new-key-value").textContent = "";
  $("#new-key").hidden = true;
}

// ---------------------------------------------------------------- playground

function stopSequences() {
  return $("#stop")
    .value.split("\n")
    .filter((line) => line.length > 0);
}

function chatRequest(prompt) {
  const system = $("#system").value.trim();
  const request = {
    chat_history: [...(system ? [{ role: "system", content: system }] : []), ...state.history],
    prompt,
    stream: true,
    temperature: Number($("#temperature").value),
  };
  const maxTokens = $("#max-tokens").value;
  if (maxTokens) request.max_tokens = Number(maxTokens);
  const stop = stopSequences();
  if (stop.length) request.stop_sequences = stop;
  if ($("#logprobs").checked) {
    request.logprobs = true;
    request.top_logprobs = 3;
  }
  return request;
}

function addTurn(role, text) {
  const body = element("div", { class: "text" }, text);
  const turn = element("li", { class: `turn ${role}` }, element("span", { class: "role" }, role), body);
  $("#transcript").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

// One span per generated token, its probability as the tooltip and the shade.
function tokenSpan(entry) {
  const probability = Math.exp(entry.logprob);
  const span = element("span", { class: "token" }, entry.token);
  const alternatives = (entry.top_logprobs || [])
    .map((top) => `${JSON.stringify(top.token)} ${Math.exp(top.logprob).toFixed(3)}`)
    .join("\n");
  span.title = `logprob ${entry.logprob.toFixed(3)} (p=${probability.toFixed(3)})${alternatives ? `\n${alternatives}` : ""}`;
  span.style.setProperty("--p", probability.toFixed(3));
  return span;
}

function answerFacts(facts) {
  return element(
    "div",
    { class: "facts" },
    `prompt tokens ${facts.prompt_tokens ?? "?"} · response tokens ${facts.response_tokens ?? "?"} · ` +
      `finish ${facts.finish_reason ?? "?"} · gateway overhead ${facts.overhead ?? "?"} ms · ` +
      `${facts.seconds.toFixed(2)} s`,
  );
}

async function send(event) {
  event.preventDefault();
  const prompt = $("#prompt").value;
  const deployment = $("#deployment").value;
  if (!prompt.trim() || state.controller) return;
  if (!deployment) {
    notify("Pick a deployment first (paste a key to list them).");
    return;
  }
  const request = chatRequest(prompt);
  $("#prompt").value = "";
  addTurn("user", prompt);
  const turn = addTurn("assistant", "");
  turn.classList.add("streaming");
  const text = turn.querySelector(".text");
  let answer = "";
  const facts = { seconds: 0 };
  const started = performance.now();
  state.controller = new AbortController();
  setBusy(true);
  try {
    const response = await api(
      "POST",
      `/v4/models/${encodeURIComponent(deployment)}/chat-completions`,
      request,
      state.controller.signal,
    );
    facts.overhead = response.headers.get("x-modelport-overhead-ms");
    for await (const { event: name, data } of serverSentEvents(response)) {
      const chunk = JSON.parse(data);
      if (name === "error") throw new ApiError(chunk.status_code || "error", describeDetail(chunk, data));
      const delta = chunk.completions?.[0]?.[1]?.[0] ?? "";
      const tokens = chunk.choices?.[0]?.logprobs?.content;
      if (tokens && tokens.length) text.append(...tokens.map(tokenSpan));
      else if (delta) text.append(delta);
      answer += delta;
      for (const name of ["finish_reason", "prompt_tokens", "response_tokens"]) {
        if (chunk[name] !== undefined && chunk[name] !== null) facts[name] = chunk[name];
      }
      turn.scrollIntoView({ block: "end" });
    }
    state.history.push({ role: "user", content: prompt }, { role: "assistant", content: answer });
  } catch (error) {
    if (error.name === "AbortError") facts.finish_reason = "stopped by you";
    else turn.append(element("div", { class: "error" }, error.message));
    reportFailure(error);
  } finally {
    facts.seconds = (performance.now() - started) / 1000;
    turn.classList.remove("streaming");
    turn.append(answerFacts(facts));
    state.controller = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  $("#send").disabled = busy;
  $("#stop-generation").disabled = !busy;
}

function clearChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("#transcript").replaceChildren();
}

// ---------------------------------------------------------------- usage chart

async function loadUsage(event) {
  if (event) event.preventDefault();
  const deployment = $("#usage-deployment").value;
  if (!deployment) return;
  const hours = Number($("#usage-range").value);
  const end = new Date(Math.ceil(Date.now() / 60000) * 60000);
  const start = new Date(end.getTime() - hours * 3600 * 1000);
  const query = new URLSearchParams({ start_date: start.toISOString(), end_date: end.toISOString(), chunks: "24" });
  try {
    const usage = await apiJson(
      "GET",
      `/v4/model-deployments/${encodeURIComponent(deployment)}/usage-statistics?${query}`,
    );
    drawUsage(usage.data, hours);
    notify("");
  } catch (error) {
    reportFailure(error);
  }
}

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

// ---------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("#key-form").addEventListener("submit", useKey);
  $("#forget-key").addEventListener("click", forgetKey);
  $("#chat-form").addEventListener("submit", (event) => event.preventDefault());
  $("#prompt-form").addEventListener("submit", send);
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("#prompt-form").requestSubmit();
    }
  });
  $("#stop-generation").addEventListener("click", () => state.controller && state.controller.abort());
  $("#clear-chat").addEventListener("click", clearChat);
  $("#temperature").addEventListener("input", () => {
    $("#temperature-value").textContent = $("#temperature").value;
  });
  $("#key-create-form").addEventListener("submit", createKey);
  $("#dismiss-new-key").addEventListener("click", dismissNewKey);
  $("#copy-new-key").addEventListener("click", () => navigator.clipboard.writeText($("#new-key-value").textContent));
  $("#usage-form").addEventListener("submit", loadUsage);
  $("#usage-deployment").addEventListener("change", () => loadUsage());
  if (apiKey()) $("#api-key").placeholder = "key in use (this tab only)";
  showView("playground");
});
