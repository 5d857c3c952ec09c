// The keys view: the account's API keys. An admin creates them (the secret shown once),
// limits them to some of the account's models and deployments and to a time, rotates
// them (the new secret shown once) and revokes them. Every form calls the API's own
// route, so every check the API makes applies; a refusal is shown in the form.

import { api, apiJson } from "./api.js";
import { $, element, isAdmin, notify, reportFailure, showFormError, state } from "./dom.js";

// The key the editor changes (null: it creates one), with the expiry it was shown with;
// and the key the rotate form renews.
let editing = null;
let rotating = null;

export async function loadKeys() {
  // Keys are an admin's to see and make (a member's key would get a 403).
  const admin = isAdmin();
  $("#key-editor").hidden = !admin;
  $("#keys-table").hidden = !admin;
  $("#keys-for-admins").hidden = admin;
  if (!admin) {
    closeKeyForms();
    $("#keys-table tbody").replaceChildren();
    return;
  }
  const keys = await apiJson("GET", "/v4/api-keys");
  fillAllowChoices(picked($("#key-models")), picked($("#key-deployments"))); // what was picked stays
  $("#keys-table tbody").replaceChildren(...keys.map(keyRow));
  notify("");
}

// ---------------------------------------------------------------- the list

function keyRow(key) {
  const expires = key.expires_at ? new Date(key.expires_at) : null;
  const revoked = Boolean(key.revoked_at);
  return element(
    "tr",
    { "data-key-id": key.id },
    element("td", {}, key.name || "(unnamed)"),
    element("td", { class: "id" }, `${key.display_prefix}…`),
    element("td", {}, key.role),
    element("td", { class: "key-allowed" }, ...allowedItems(key)),
    element("td", {}, new Date(key.created_at).toLocaleString()),
    element("td", { class: "key-expires" }, expires ? expires.toLocaleString() : "never"),
    element("td", { class: "key-state" }, keyState(key, expires)),
    element(
      "td",
      { class: "actions" },
      rowButton("Edit", "edit", revoked, () => openKeyEditor(key)),
      rowButton("Rotate", "rotate", revoked, () => openRotateForm(key)),
      rowButton("Revoke", "revoke", revoked, () => revokeKey(key).catch(reportFailure)),
    ),
  );
}

function rowButton(label, kind, disabled, onClick) {
  const button = element("button", { type: "button", class: kind }, label);
  button.disabled = disabled;
  button.addEventListener("click", onClick);
  return button;
}

// What the key may use: "every model" with no allow-list, else one line per entry (a
// deployment by its name where the account still has it, by its id otherwise).
function allowedItems(key) {
  if (key.models === null && key.deployments === null) return ["every model"];
  const deploymentNames = new Map(state.deployments.map((deployment) => [deployment.id, deployment.name]));
  return [
    ...(key.models || []).map((name) => element("div", { class: "allowed-model" }, `model ${name}`)),
    ...(key.deployments || []).map((id) =>
      element("div", { class: "allowed-deployment" }, `deployment ${deploymentNames.get(id) || id}`),
    ),
  ];
}

function keyState(key, expires) {
  if (key.revoked_at) return "revoked";
  if (expires && expires.getTime() <= Date.now()) return "expired";
  const retired = key.previous_key_retired_at ? new Date(key.previous_key_retired_at) : null;
  if (retired && retired.getTime() > Date.now()) return `active (the old secret works until ${retired.toLocaleString()})`;
  return "active";
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke the key "${key.name || key.display_prefix}"? Programs using it stop working.`)) return;
  await api("DELETE", `/v4/api-keys/${encodeURIComponent(key.id)}`);
  if (editing?.key.id === key.id || rotating?.id === key.id) closeKeyForms();
  await loadKeys();
}

// ---------------------------------------------------------------- the editor

// The allow-list choices: the account's models (by name, as the API and /v1 call them)
// and deployments, from the registry view's lists. A picked entry the account no longer
// has (or a `vendor/name` set through the API) stays as a choice of its own, so that an
// edit never drops it unseen.
function fillAllowChoices(models, deployments) {
  const modelNames = new Map(state.models.map((model) => [model.id, model.name]));
  const byName = (a, b) => a.name.localeCompare(b.name);
  setChoices(
    $("#key-models"),
    [...state.models].sort(byName).map((model) => [model.name, model.name]),
    models,
  );
  setChoices(
    $("#key-deployments"),
    [...state.deployments].sort(byName).map((deployment) => [
      deployment.id,
      `${deployment.name} (${modelNames.get(deployment.model_instance_id) || deployment.model_instance_id})`,
    ]),
    deployments,
  );
}

// `choices`: [value, label] pairs; `selected`: the values to pick, added when missing.
function setChoices(select, choices, selected) {
  const known = new Set(choices.map(([value]) => value));
  const all = [...choices, ...(selected || []).filter((value) => !known.has(value)).map((value) => [value, value])];
  const chosen = new Set(selected || []);
  select.replaceChildren(
    ...all.map(([value, label]) => {
      const option = element("option", { value }, label);
      option.selected = chosen.has(value);
      return option;
    }),
  );
}

// The values picked in a multiple select; none picked: null, no allow-list.
function picked(select) {
  const values = [...select.selectedOptions].map((option) => option.value);
  return values.length ? values : null;
}

// A datetime-local field holds the browser's local time, with no zone: the API is sent
// that moment in UTC, and a key's expiry is shown back in local time.
function expiryFromField() {
  const value = $("#key-expires").value;
  if (!value) return null;
  const moment = new Date(value);
  if (Number.isNaN(moment.getTime())) throw new Error(`Expires: "${value}" is not a date and time`);
  return moment.toISOString();
}

function localFieldValue(isoMoment) {
  if (!isoMoment) return "";
  const moment = new Date(isoMoment);
  return new Date(moment.getTime() - moment.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}

export function openKeyEditor(key) {
  closeKeyForms();
  const form = $("#key-editor");
  const expires = localFieldValue(key?.expires_at);
  editing = key ? { key, expires } : null;
  form.dataset.mode = key ? "edit" : "create";
  $("#key-editor-title").textContent = key ? `Edit key ${key.name || key.display_prefix}` : "New key";
  $("#key-editor-submit").textContent = key ? "Save key" : "Create key";
  form.querySelector(".cancel").hidden = !key;
  $("#new-key-name").value = key ? key.name : "";
  $("#new-key-role").value = key ? key.role : "member";
  $("#new-key-role").disabled = Boolean(key); // the API changes no key's role
  fillAllowChoices(key?.models, key?.deployments);
  $("#key-expires").value = expires;
  if (key) {
    form.scrollIntoView({ block: "nearest" });
    $("#new-key-name").focus();
  }
}

function sameEntries(left, right) {
  return JSON.stringify([...(left || [])].sort()) === JSON.stringify([...(right || [])].sort());
}

// An edit sends what was changed only: an expiry already past, left as it was, is not
// sent back to be refused.
function changes(fields, { key, expires }) {
  const body = {};
  if (fields.name !== key.name) body.name = fields.name;
  if (!sameEntries(fields.models, key.models)) body.models = fields.models;
  if (!sameEntries(fields.deployments, key.deployments)) body.deployments = fields.deployments;
  if ($("#key-expires").value !== expires) body.expires_at = fields.expires_at;
  return body;
}

export async function saveKey(event) {
  event.preventDefault();
  const form = $("#key-editor");
  const edited = editing;
  let created = null;
  try {
    const fields = {
      name: $("#new-key-name").value.trim(),
      models: picked($("#key-models")),
      deployments: picked($("#key-deployments")),
      expires_at: expiryFromField(),
    };
    if (edited) {
      await apiJson("PATCH", `/v4/api-keys/${encodeURIComponent(edited.key.id)}`, changes(fields, edited));
    } else {
      created = await apiJson("POST", "/v4/api-keys", { ...fields, role: $("#new-key-role").value });
    }
  } catch (error) {
    showFormError(form, error.message);
    return;
  }
  openKeyEditor(null); // back to an empty "new key" form
  if (created) showSecret(created.key, "The new key, shown only now: it will not be shown again, so store it safely.");
  try {
    await loadKeys();
  } catch (error) {
    reportFailure(error);
    return;
  }
  if (edited) notify(`Key ${edited.key.name || edited.key.display_prefix} saved.`, false);
}

// ---------------------------------------------------------------- rotation

function openRotateForm(key) {
  closeKeyForms();
  rotating = key;
  const form = $("#key-rotate-form");
  $("#key-rotate-title").textContent = `Rotate key ${key.name || key.display_prefix}`;
  $("#key-grace").value = "0";
  form.hidden = false;
  form.scrollIntoView({ block: "nearest" });
  $("#key-grace").focus();
}

async function rotateKey(event) {
  event.preventDefault();
  const form = $("#key-rotate-form");
  const key = rotating;
  let rotated;
  try {
    rotated = await apiJson("POST", `/v4/api-keys/${encodeURIComponent(key.id)}/rotate`, {
      grace_seconds: Number($("#key-grace").value),
    });
  } catch (error) {
    showFormError(form, error.message);
    return;
  }
  closeKeyForms();
  const retired = new Date(rotated.previous_key_retired_at);
  const old =
    retired.getTime() > Date.now()
      ? `The old secret works until ${retired.toLocaleString()}.`
      : "The old secret has stopped working.";
  showSecret(
    rotated.key,
    `The new secret of the key "${key.name || key.display_prefix}", shown only now: it will not be shown again, so store it safely. ${old}`,
  );
  await loadKeys().catch(reportFailure);
}

// ---------------------------------------------------------------- shown once

function showSecret(secret, note) {
  $("#new-key-note").textContent = note;
  $("#new-key-value").textContent = secret;
  $("#new-key").hidden = false;
}

export function dismissNewKey() {
  $("#new-key-value").textContent = "";
  $("#new-key").hidden = true;
}

// Back to an empty "new key" editor, the rotate form closed: on Cancel, and whenever
// the key or account in use changes.
export function closeKeyForms() {
  editing = null;
  rotating = null;
  for (const form of [$("#key-editor"), $("#key-rotate-form")]) {
    form.reset();
    showFormError(form, "");
  }
  const editor = $("#key-editor");
  editor.dataset.mode = "create";
  $("#key-editor-title").textContent = "New key";
  $("#key-editor-submit").textContent = "Create key";
  editor.querySelector(".cancel").hidden = true;
  $("#new-key-role").disabled = false;
  fillAllowChoices(null, null);
  $("#key-rotate-form").hidden = true;
}

export function wireKeyForms() {
  $("#key-editor").addEventListener("submit", saveKey);
  $("#key-editor .cancel").addEventListener("click", closeKeyForms);
  $("#key-rotate-form").addEventListener("submit", rotateKey);
  $("#key-rotate-form .cancel").addEventListener("click", closeKeyForms);
  $("#dismiss-new-key").addEventListener("click", dismissNewKey);
  $("#copy-new-key").addEventListener("click", () => navigator.clipboard.writeText($("#new-key-value").textContent));
}
