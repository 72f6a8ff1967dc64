// The page: two views (chat, dashboard) as keyboard-usable tabs; #chat or #dashboard in the address picks one.

import { api, askForKey } from "./api.js";
import { initChat, loadModels } from "./chat.js";
import { renderPlots, startDashboard, stopDashboard } from "./dashboard.js";

const VIEWS = ["chat", "dashboard"];

function show(name, { focus = false } = {}) {
  for (const view of VIEWS) {
    const tab = document.getElementById(`tab-${view}`);
    const selected = view === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    document.getElementById(`view-${view}`).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  document.body.dataset.view = name;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  // The event stream runs only while the dashboard is shown: a chat tab left open costs the server nothing.
  if (name === "dashboard") {
    startDashboard();
    renderPlots();
  } else {
    stopDashboard();
  }
}

function bindTabs() {
  for (const view of VIEWS) {
    document.getElementById(`tab-${view}`).addEventListener("click", () => show(view));
  }
  document.querySelector("[role=tablist]").addEventListener("keydown", (event) => {
    const current = VIEWS.findIndex((v) => document.getElementById(`tab-${v}`).getAttribute("aria-selected") === "true");
    const moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: VIEWS.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    show(VIEWS[(moves[event.key] + VIEWS.length) % VIEWS.length], { focus: true });
  });
  window.addEventListener("hashchange", () => {
    const name = location.hash.slice(1);
    if (VIEWS.includes(name)) show(name);
  });
}

async function showVersion() {
  try {
    const response = await api("/health");
    if (response.ok) document.getElementById("server-version").textContent = `v${(await response.json()).version}`;
  } catch {
    // the version is decoration; the views say what is wrong if the server is away
  }
}

bindTabs();
document.getElementById("key-button").addEventListener("click", async () => {
  if (!(await askForKey())) return;
  // A new key may open what the old one could not: list the models again, reconnect the dashboard.
  loadModels();
  if (!document.getElementById("view-dashboard").hidden) {
    stopDashboard();
    startDashboard();
  }
});
const initial = location.hash.slice(1);
show(VIEWS.includes(initial) ? initial : "chat");
showVersion();
initChat();
