// The keys view: the account's API keys; an admin creates (shown once) and revokes them.

import { api, apiJson } from "./api.js";
import { $, element, isAdmin, notify, reportFailure } from "./dom.js";

export async function loadKeys() {
  // Keys are an admin's to see and make (a member's key would get a 403).
  const admin = isAdmin();
  $("#key-create-form").hidden = !admin;
  $("#keys-table").hidden = !admin;
  $("#keys-for-admins").hidden = admin;
  if (!admin) {
    $("#keys-table tbody").replaceChildren();
    return;
  }
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

export async function createKey(event) {
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

export function dismissNewKey() {
  $("#new-key-value").textContent = "";
  $("#new-key").hidden = true;
}
