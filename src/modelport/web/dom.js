// Small DOM helpers and the page's state, shared by every view.

const SVG = "http://www.w3.org/2000/svg";

export const $ = (selector) => document.querySelector(selector);

export const state = {
  // Goes up whenever the key or the account changes: an answer that comes back for an
  // older one is dropped rather than drawn over the new key's views.
  epoch: 0,
  identity: null, // a promise of the caller's accounts and role (GET /user-info)
  role: null, // "admin" or "member" in the selected account
  models: [],
  deployments: [],
  history: [], // finished turns of the conversation: {role, content}
  controller: null, // aborts the answer being streamed
};

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name.startsWith("aria-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

export function svgElement(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function notify(message, isError = true) {
  const notice = $("#notice");
  notice.textContent = message;
  notice.className = isError ? "error" : "info";
  notice.hidden = !message;
}

export function reportFailure(error) {
  if (error.name === "AbortError") return;
  if (error.status === 401) notify("The API key was refused (401): paste a valid key above.");
  else notify(error.message);
}

// A form's own error line (its `.form-error`): where the API's refusal of what the form
// sent is shown, next to the fields it names.
export function showFormError(form, message) {
  const error = form.querySelector(".form-error");
  error.textContent = message;
  error.hidden = !message;
}

export function isAdmin() {
  return state.role === "admin";
}

// The models that generate text: the playground chats with them.
export const TEXT_MODEL_TYPES = new Set(["CHAT_COMPLETION", "COMPLETION"]);
