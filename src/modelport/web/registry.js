// The registry view: the account's models and deployments, and for its admins forms
// that create and change them. The forms call the API's own routes, so every check the
// API makes applies; a refusal (403, 409, 422, ...) is shown with the API's message.

import { allPages, api, apiJson } from "./api.js";
import { $, element, isAdmin, notify, showFormError, state } from "./dom.js";

// The choices the API accepts (schemas/catalogue.py `ModelType`, `ModelVendor`);
// tests/web checks that they are the OpenAPI document's.
export const MODEL_TYPES = ["CHAT_COMPLETION", "COMPLETION", "AGENT", "EMBEDDING", "RERANKING", "GENERIC", "BUNDLE"];
export const MODEL_VENDORS = [
  "LLMENGINE",
  "OPENAI",
  "ANTHROPIC",
  "GOOGLE",
  "VERTEX_AI",
  "COHERE",
  "BEDROCK",
  "FIREWORKS_AI",
  "LAUNCH",
  "OTHER",
];

// The model or deployment a form edits (null: it creates one).
const editing = { model: null, deployment: null };

export async function loadRegistry() {
  const [models, deployments] = await Promise.all([allPages("/v4/models"), allPages("/v4/model-deployments")]);
  state.models = models;
  state.deployments = deployments;
}

function statusBadge(status) {
  return element("span", { class: `status status-${status.toLowerCase()}` }, status);
}

function editButton(label, onClick) {
  const button = element("button", { type: "button", class: "edit" }, label);
  button.addEventListener("click", onClick);
  return button;
}

export function drawRegistry() {
  const admin = isAdmin();
  for (const control of document.querySelectorAll("#catalogue .admin-only")) control.hidden = !admin;
  if (!admin) closeForms();
  const modelNames = new Map(state.models.map((model) => [model.id, model.name]));
  $("#models-table tbody").replaceChildren(
    ...state.models.map((model) =>
      element(
        "tr",
        { "data-model-id": model.id },
        element("td", {}, model.display_name || model.name, element("div", { class: "id" }, model.name)),
        element("td", {}, model.model_type),
        element("td", {}, model.model_vendor || ""),
        element("td", {}, String(model.deployment_count)),
        element("td", { class: "id" }, model.id),
        element(
          "td",
          { class: "actions" },
          ...(admin
            ? [editButton("Edit", () => openModelForm(model)), editButton("Deploy", () => openDeploymentForm(null, model))]
            : []),
        ),
      ),
    ),
  );
  $("#deployments-table tbody").replaceChildren(
    ...state.deployments.map((deployment) => {
      const reason = (deployment.deployment_metadata || {}).status_reason;
      const status = element("td", {}, statusBadge(deployment.status));
      if (reason) status.title = reason;
      return element(
        "tr",
        { "data-deployment-id": deployment.id },
        element("td", {}, deployment.name),
        status,
        element("td", {}, modelNames.get(deployment.model_instance_id) || deployment.model_instance_id || ""),
        element("td", { class: "id" }, deployment.id),
        element("td", { class: "actions" }, ...(admin ? [editButton("Edit", () => openDeploymentForm(deployment))] : [])),
      );
    }),
  );
}

// ---------------------------------------------------------------- forms

function json(text, field) {
  if (!text.trim()) return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${field} is not JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error(`${field} must be a JSON object`);
  return value;
}

function pretty(value) {
  return value ? JSON.stringify(value, null, 2) : "";
}

export function closeForms() {
  for (const form of [$("#model-form"), $("#deployment-form")]) {
    form.hidden = true;
    form.reset();
    showFormError(form, "");
  }
  editing.model = null;
  editing.deployment = null;
}

function fillSelect(select, values) {
  select.replaceChildren(...values.map((value) => element("option", { value }, value)));
}

export function openModelForm(model) {
  closeForms();
  const form = $("#model-form");
  editing.model = model;
  form.dataset.mode = model ? "edit" : "create";
  $("#model-form-title").textContent = model ? `Edit model ${model.name}` : "New model";
  fillSelect($("#model-type"), MODEL_TYPES);
  fillSelect($("#model-vendor"), MODEL_VENDORS);
  $("#model-name").value = model ? model.name : "";
  $("#model-display-name").value = model?.display_name || "";
  $("#model-type").value = model ? model.model_type : "CHAT_COMPLETION";
  $("#model-vendor").value = model?.model_vendor || "LLMENGINE";
  $("#model-parameters").value = pretty(model?.model_creation_parameters);
  $("#model-description").value = model?.description || "";
  form.hidden = false;
  $("#model-name").focus();
}

// An edit sends only what was changed: a setting shown redacted is never written back.
function changed(fields, original) {
  if (!original) return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== null));
  return Object.fromEntries(
    Object.entries(fields).filter(([name, value]) => JSON.stringify(value) !== JSON.stringify(original[name] ?? null)),
  );
}

async function saveModel(event) {
  event.preventDefault();
  const form = $("#model-form");
  const model = editing.model;
  const name = $("#model-name").value.trim();
  try {
    const fields = {
      name,
      display_name: $("#model-display-name").value.trim() || null,
      model_type: $("#model-type").value,
      model_vendor: $("#model-vendor").value,
      model_creation_parameters: json($("#model-parameters").value, "Creation parameters"),
      description: $("#model-description").value.trim() || null,
    };
    const body = changed(fields, model);
    if (model) await api("PATCH", `/v4/models/${encodeURIComponent(model.id)}`, body);
    else await api("POST", "/v4/models", body);
  } catch (error) {
    showFormError(form, error.message);
    return;
  }
  closeForms();
  notify(model ? `Model ${name} saved.` : `Model ${name} created.`, false);
  await reloadRegistry();
}

export function openDeploymentForm(deployment, model = null) {
  closeForms();
  const form = $("#deployment-form");
  editing.deployment = deployment;
  form.dataset.mode = deployment ? "edit" : "create";
  $("#deployment-form-title").textContent = deployment ? `Edit deployment ${deployment.name}` : "New deployment";
  const select = $("#deployment-model");
  select.replaceChildren(...state.models.map((item) => element("option", { value: item.id }, item.name)));
  select.value = deployment ? deployment.model_instance_id : model ? model.id : state.models[0]?.id || "";
  select.disabled = Boolean(deployment); // a deployment stays with its model
  $("#deployment-name").value = deployment ? deployment.name : "";
  $("#deployment-vendor-configuration").value = pretty(deployment?.vendor_configuration);
  $("#deployment-parameters").value = pretty(deployment?.model_creation_parameters);
  form.hidden = false;
  $("#deployment-name").focus();
}

async function saveDeployment(event) {
  event.preventDefault();
  const form = $("#deployment-form");
  const deployment = editing.deployment;
  const modelId = $("#deployment-model").value;
  const name = $("#deployment-name").value.trim();
  try {
    const fields = {
      name,
      vendor_configuration: json($("#deployment-vendor-configuration").value, "Vendor configuration"),
      model_creation_parameters: json($("#deployment-parameters").value, "Model settings"),
    };
    const body = changed(fields, deployment);
    const base = `/v4/models/${encodeURIComponent(modelId)}/deployments`;
    if (deployment) await api("PATCH", `${base}/${encodeURIComponent(deployment.id)}`, body);
    else await apiJson("POST", base, body);
  } catch (error) {
    showFormError(form, error.message);
    return;
  }
  closeForms();
  notify(deployment ? `Deployment ${name} saved.` : `Deployment ${name} created.`, false);
  await reloadRegistry();
}

async function reloadRegistry() {
  try {
    await loadRegistry();
    drawRegistry();
  } catch (error) {
    notify(error.message);
  }
}

export function wireRegistryForms() {
  $("#new-model").addEventListener("click", () => openModelForm(null));
  $("#new-deployment").addEventListener("click", () => openDeploymentForm(null));
  $("#model-form").addEventListener("submit", saveModel);
  $("#deployment-form").addEventListener("submit", saveDeployment);
  for (const cancel of document.querySelectorAll("#catalogue .editor .cancel")) cancel.addEventListener("click", closeForms);
}
