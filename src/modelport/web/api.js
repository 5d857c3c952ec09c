// Talking to the server. The API key and the selected account live in sessionStorage
// (this tab only, gone when it closes) and travel only as headers, never in a URL.

const KEY_STORAGE = "modelport.api-key";
const ACCOUNT_STORAGE = "modelport.account";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

// A new key (or none) starts with no account selected: the old key's choice may not
// even be one of the new key's accounts.
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem(ACCOUNT_STORAGE);
}

export function selectedAccount() {
  return sessionStorage.getItem(ACCOUNT_STORAGE) || "";
}

export function selectAccount(accountId) {
  if (accountId) sessionStorage.setItem(ACCOUNT_STORAGE, accountId);
  else sessionStorage.removeItem(ACCOUNT_STORAGE);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

// The message of an error body: modelport's own `{"detail"}` (a string, or a list of
// field errors), or the `{"error": {"message"}}` of the OpenAI-compatible surface.
export function describeDetail(body, fallback) {
  if (body && body.error && typeof body.error.message === "string") return body.error.message;
  if (!body || body.detail === undefined) return fallback;
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) {
    return body.detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
  }
  return JSON.stringify(body.detail);
}

// `inAccount: false` leaves the selected account out: who the key is (GET /user-info)
// must be answered even when a remembered account is no longer one of the key's.
export async function api(method, path, body, signal, { inAccount = true } = {}) {
  const headers = { "x-api-key": apiKey() };
  const account = selectedAccount();
  if (account && inAccount) headers["x-selected-account-id"] = account;
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

export async function apiJson(method, path, body, options) {
  return (await api(method, path, body, undefined, options)).json();
}

export async function allPages(path) {
  const items = [];
  for (let page = 1; ; page += 1) {
    const found = await apiJson("GET", `${path}?limit=1000&page=${page}`);
    items.push(...found.items);
    if (items.length >= found.total_item_count || found.items.length === 0) return items;
  }
}

// Server-sent events from a fetch body: yields {event, data} per event.
export async function* serverSentEvents(response) {
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
