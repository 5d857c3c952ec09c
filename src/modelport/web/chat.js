// The playground: pick a model by name (or one of its deployments) and chat.
//
// A model picked by name is called as `/v1/chat/completions` calls it: the server
// resolves the name to one of the model's READY deployments (in turn, with its retries
// and fallbacks). A deployment picked by hand is called directly on the v4 route.

import { ApiError, api, describeDetail, serverSentEvents } from "./api.js";
import { $, TEXT_MODEL_TYPES, element, notify, reportFailure, state } from "./dom.js";

export const ROUTED = ""; // the deployment choice "any of the model's, routed by name"

function textModels() {
  return state.models
    .filter((model) => TEXT_MODEL_TYPES.has(model.model_type))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function deploymentsOf(model) {
  return model ? state.deployments.filter((deployment) => deployment.model_instance_id === model.id) : [];
}

function chosenModel() {
  return textModels().find((model) => model.name === $("#model").value);
}

export function fillModelChoices() {
  const select = $("#model");
  const chosen = select.value;
  const models = textModels();
  select.replaceChildren(
    ...models.map((model) => {
      const count = deploymentsOf(model).length;
      return element("option", { value: model.name }, `${model.name} (${count} deployment${count === 1 ? "" : "s"})`);
    }),
  );
  if (models.some((model) => model.name === chosen)) select.value = chosen;
  fillDeploymentChoices();
}

export function fillDeploymentChoices() {
  const select = $("#deployment");
  const chosen = select.value;
  const model = chosenModel();
  const deployments = deploymentsOf(model);
  select.replaceChildren(
    ...(model ? [element("option", { value: ROUTED }, "any ready one, by the model's name (as /v1 routes it)")] : []),
    ...deployments.map((deployment) =>
      element("option", { value: deployment.id }, `${deployment.name} (${deployment.status})`),
    ),
  );
  if (deployments.some((deployment) => deployment.id === chosen)) select.value = chosen;
}

function stopSequences() {
  return $("#stop")
    .value.split("\n")
    .filter((line) => line.length > 0);
}

function sampling() {
  const options = { temperature: Number($("#temperature").value) };
  const maxTokens = $("#max-tokens").value;
  if (maxTokens) options.max_tokens = Number(maxTokens);
  if ($("#logprobs").checked) {
    options.logprobs = true;
    options.top_logprobs = 3;
  }
  return options;
}

function systemTurns() {
  const system = $("#system").value.trim();
  return system ? [{ role: "system", content: system }] : [];
}

// Each surface's request, and how to read one of its stream's events into
// {text, tokens, finish_reason, prompt_tokens, response_tokens}.
const SURFACES = {
  deployment: {
    path: (deployment) => `/v4/models/${encodeURIComponent(deployment)}/chat-completions`,
    body(prompt) {
      const stop = stopSequences();
      return {
        chat_history: [...systemTurns(), ...state.history],
        prompt,
        stream: true,
        ...sampling(),
        ...(stop.length ? { stop_sequences: stop } : {}),
      };
    },
    read(chunk) {
      return {
        text: chunk.completions?.[0]?.[1]?.[0] ?? "",
        tokens: chunk.choices?.[0]?.logprobs?.content,
        finish_reason: chunk.finish_reason,
        prompt_tokens: chunk.prompt_tokens,
        response_tokens: chunk.response_tokens,
      };
    },
  },
  model: {
    path: () => "/v1/chat/completions",
    body(prompt, modelName) {
      const stop = stopSequences();
      return {
        model: modelName,
        messages: [...systemTurns(), ...state.history, { role: "user", content: prompt }],
        stream: true,
        stream_options: { include_usage: true },
        ...sampling(),
        ...(stop.length ? { stop } : {}),
      };
    },
    read(chunk) {
      const choice = chunk.choices?.[0];
      return {
        text: choice?.delta?.content ?? "",
        tokens: choice?.logprobs?.content,
        finish_reason: choice?.finish_reason,
        prompt_tokens: chunk.usage?.prompt_tokens,
        response_tokens: chunk.usage?.completion_tokens,
      };
    },
  },
};

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
    `${facts.target} · prompt tokens ${facts.prompt_tokens ?? "?"} · response tokens ${facts.response_tokens ?? "?"} · ` +
      `finish ${facts.finish_reason ?? "?"} · gateway overhead ${facts.overhead ?? "?"} ms · ` +
      `${facts.seconds.toFixed(2)} s`,
  );
}

export async function send(event) {
  event.preventDefault();
  const prompt = $("#prompt").value;
  const model = chosenModel();
  const deployment = $("#deployment").value;
  if (!prompt.trim() || state.controller) return;
  if (!model) {
    notify("Pick a model first (paste a key to list them).");
    return;
  }
  const surface = deployment === ROUTED ? SURFACES.model : SURFACES.deployment;
  const request = surface.body(prompt, model.name);
  $("#prompt").value = "";
  addTurn("user", prompt);
  const turn = addTurn("assistant", "");
  turn.classList.add("streaming");
  const text = turn.querySelector(".text");
  let answer = "";
  const facts = {
    seconds: 0,
    target: deployment === ROUTED ? `model ${model.name}` : `deployment ${$("#deployment").selectedOptions[0].text}`,
  };
  const started = performance.now();
  state.controller = new AbortController();
  setBusy(true);
  try {
    const response = await api("POST", surface.path(deployment), request, state.controller.signal);
    facts.overhead = response.headers.get("x-modelport-overhead-ms");
    for await (const { event: name, data } of serverSentEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (name === "error" || chunk.error) {
        throw new ApiError(chunk.status_code || chunk.error?.code || "error", describeDetail(chunk, data));
      }
      const piece = surface.read(chunk);
      if (piece.tokens && piece.tokens.length) text.append(...piece.tokens.map(tokenSpan));
      else if (piece.text) text.append(piece.text);
      answer += piece.text;
      for (const fact of ["finish_reason", "prompt_tokens", "response_tokens"]) {
        if (piece[fact] !== undefined && piece[fact] !== null) facts[fact] = piece[fact];
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

export function clearChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("#transcript").replaceChildren();
}
