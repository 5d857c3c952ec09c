// The modelport page: a playground and views of the registry, keys and usage.
// Plain browser JavaScript modules, no build step. Who the key belongs to decides what
// is shown: the account selector lists the key's accounts (a server operator's may be
// many; a member's or an account admin's key has its own account only), and the
// create/edit controls appear for the admins of the selected account.

import { apiJson, apiKey, selectAccount, selectedAccount, setApiKey } from "./api.js";
import { clearChat, fillDeploymentChoices, fillModelChoices, send } from "./chat.js";
import { $, element, notify, reportFailure, state } from "./dom.js";
import { closeKeyForms, dismissNewKey, loadKeys, wireKeyForms } from "./keys.js";
import { closeForms, drawRegistry, loadRegistry, wireRegistryForms } from "./registry.js";
import { clearUsage, fillUsageDeployments, loadUsage } from "./usage.js";

// ---------------------------------------------------------------- who is calling

// The key's accounts and its role in the selected one. With several accounts the page
// always names one (x-selected-account-id), so what it shows is never a guess.
async function loadIdentity() {
  const info = await apiJson("GET", "/user-info", undefined, { inAccount: false });
  const profiles = info.access_profiles || [];
  let chosen = selectedAccount();
  if (profiles.length > 1) {
    if (!profiles.some((profile) => profile.account.id === chosen)) chosen = profiles[0].account.id;
    selectAccount(chosen);
  } else {
    selectAccount("");
    chosen = profiles[0]?.account.id;
  }
  const current = profiles.find((profile) => profile.account.id === chosen);
  state.role = current ? current.role : null;
  const select = $("#account");
  select.replaceChildren(
    ...profiles.map((profile) =>
      element("option", { value: profile.account.id }, `${profile.account.name} (${profile.role})`),
    ),
  );
  if (chosen) select.value = chosen;
  $("#account-form").hidden = profiles.length < 2;
}

function identity() {
  if (!state.identity) {
    state.identity = loadIdentity();
    state.identity.catch(() => {
      state.identity = null; // tried again on the next view
    });
  }
  return state.identity;
}

// ---------------------------------------------------------------- views

async function showRegistry(epoch, draw) {
  await loadRegistry();
  if (epoch !== state.epoch) return;
  fillModelChoices();
  fillUsageDeployments();
  draw();
}

const LOADERS = {
  playground: (epoch) => showRegistry(epoch, () => {}),
  catalogue: (epoch) => showRegistry(epoch, drawRegistry),
  // The key editor offers the registry's models and deployments for a key's allow-lists.
  keys: async (epoch) => {
    await showRegistry(epoch, () => {});
    if (epoch === state.epoch) await loadKeys();
  },
  usage: async (epoch) => {
    await showRegistry(epoch, () => {});
    if (epoch === state.epoch) await loadUsage();
  },
};

async function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== name;
  if (!apiKey()) {
    notify("Paste an API key to start (the key printed at first start, or one made with `modelport keys create`).");
    return;
  }
  const epoch = state.epoch;
  try {
    await identity();
    if (epoch !== state.epoch) return;
    await LOADERS[name](epoch);
    if (epoch === state.epoch) notify("");
  } catch (error) {
    if (epoch === state.epoch) reportFailure(error);
  }
}

function currentView() {
  const selected = document.querySelector('.tab[aria-selected="true"]');
  return selected ? selected.dataset.view : "playground";
}

// What one key (or account) showed must not stay on screen under another: every
// list, form, table, the chart and the conversation are emptied when either changes.
function clearViews() {
  state.epoch += 1;
  state.identity = null;
  state.role = null;
  state.models = [];
  state.deployments = [];
  fillModelChoices();
  fillDeploymentChoices();
  fillUsageDeployments();
  closeForms();
  for (const control of document.querySelectorAll(".admin-only")) control.hidden = true;
  for (const body of document.querySelectorAll("main table tbody")) body.replaceChildren();
  clearUsage();
  closeKeyForms();
  dismissNewKey();
  clearChat();
}

function useKey(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) return;
  setApiKey(key);
  $("#account-form").hidden = true;
  $("#account").replaceChildren();
  clearViews();
  $("#api-key").value = "";
  $("#api-key").placeholder = "key in use (this tab only)";
  notify("");
  showView(currentView());
}

function forgetKey() {
  setApiKey("");
  $("#api-key").placeholder = "paste an x-api-key";
  $("#account-form").hidden = true;
  $("#account").replaceChildren();
  clearViews();
  showView(currentView());
}

function switchAccount() {
  selectAccount($("#account").value);
  clearViews();
  showView(currentView());
}

// ---------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("#key-form").addEventListener("submit", useKey);
  $("#forget-key").addEventListener("click", forgetKey);
  $("#account").addEventListener("change", switchAccount);
  $("#account-form").addEventListener("submit", (event) => event.preventDefault());
  $("#chat-form").addEventListener("submit", (event) => event.preventDefault());
  $("#model").addEventListener("change", fillDeploymentChoices);
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
  wireRegistryForms();
  wireKeyForms();
  const reloadUsage = (event) => {
    if (event) event.preventDefault();
    loadUsage().catch(reportFailure);
  };
  $("#usage-form").addEventListener("submit", reloadUsage);
  $("#usage-deployment").addEventListener("change", () => reloadUsage());
  $("#usage-range").addEventListener("change", () => reloadUsage());
  if (apiKey()) $("#api-key").placeholder = "key in use (this tab only)";
  showView("playground");
});
