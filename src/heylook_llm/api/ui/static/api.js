// Talking to the server: every request carries the API key the user typed (if any) as a Bearer header, a 401
// asks for the key and retries once, and Server-Sent Events are read from fetch streams (EventSource cannot send
// headers).

const KEY_NAME = "heylookllm.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME) ?? localStorage.getItem(KEY_NAME) ?? "";
}

export function saveApiKey(key, remember) {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  if (!key) return;
  (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
}

let keyPrompt = null; // one open dialog at a time; every 401 waits for it

// Opens the key dialog; resolves true when the user saved a key, false when they cancelled.
export function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  const remember = document.getElementById("key-remember");
  document.getElementById("key-reason").textContent =
    reason || "Enter the server's API key. It is sent as an Authorization header and kept in this browser only.";
  input.value = apiKey();
  remember.checked = localStorage.getItem(KEY_NAME) !== null;
  keyPrompt = new Promise((resolve) => {
    const form = document.getElementById("key-form");
    const finish = (saved) => {
      form.removeEventListener("submit", onSave);
      document.getElementById("key-cancel").removeEventListener("click", onCancel);
      document.getElementById("key-clear").removeEventListener("click", onClear);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      keyPrompt = null;
      resolve(saved);
    };
    const onSave = (event) => {
      event.preventDefault();
      saveApiKey(input.value.trim(), remember.checked);
      finish(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    const onClear = () => {
      saveApiKey("", false);
      input.value = "";
      finish(false);
    };
    form.addEventListener("submit", onSave);
    document.getElementById("key-cancel").addEventListener("click", onCancel);
    document.getElementById("key-clear").addEventListener("click", onClear);
    dialog.addEventListener("cancel", onCancel);
  });
  dialog.showModal();
  input.focus();
  return keyPrompt;
}

// fetch() with the key; on 401 asks for a key and tries again (once per key the user enters).
export async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = apiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    const message = await errorMessage(response);
    const saved = await askForKey(
      key ? `The server refused this key: ${message}` : "This server needs an API key.",
    );
    if (!saved) return response;
  }
}

export async function getJSON(path, options = {}) {
  const response = await api(path, options);
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

// The message of an error response in either dialect's shape: OpenAI's {"error": {"message"}} or Ollama's
// {"error": "..."}.
export async function errorMessage(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    const error = body.error ?? body.detail ?? body;
    if (typeof error === "string") return error;
    if (error && typeof error.message === "string") return error.message;
  } catch {
    // not JSON: the text itself says what went wrong
  }
  return text || `${response.status} ${response.statusText}`;
}

// Server-Sent Events of a fetch response, as {event, data} objects (data: the joined data lines).
export async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer[end] === "\r" ? 4 : 2));
        const event = parseEvent(block);
        if (event) yield event;
      }
    }
    const last = parseEvent(buffer);
    if (last) yield last;
  } finally {
    reader.releaseLock();
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}
