// The chat: a model picker, streamed answers rendered as Markdown, stop, regenerate, copy, images, settings and
// conversations kept in localStorage. Answers come from the OpenAI dialect's /v1/chat/completions as SSE.

import { api, errorMessage, getJSON, sseEvents } from "./api.js";
import { imageFiles, imageToDataUrl } from "./images.js";
import { button, copyText, fillMessage, messageElement } from "./messages.js";
import * as store from "./store.js";

const $ = (id) => document.getElementById(id);

const chat = {
  models: [],
  conversations: store.loadConversations(),
  current: null,
  settings: store.loadSettings(),
  attachments: [],
  controller: null,
  renderPending: null,
};

// --- models --------------------------------------------------------------------------------------------------
export async function loadModels() {
  const select = $("model-select");
  let list;
  try {
    list = await getJSON("/v1/models");
  } catch (error) {
    notice(`Cannot list models: ${error.message}. The chat needs the OpenAI API (--api openai or both).`);
    return;
  }
  chat.models = list.data.filter((m) => !m.capabilities?.length || m.capabilities.includes("completion"));
  const previous = select.value || chat.current?.model || chat.settings.model;
  select.replaceChildren(
    ...chat.models.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.capabilities?.includes("vision") ? `${m.id} (vision)` : m.id;
      return option;
    }),
  );
  if (chat.models.some((m) => m.id === previous)) select.value = previous;
  showCapabilities();
}

function currentModel() {
  return chat.models.find((m) => m.id === $("model-select").value);
}

function takesImages() {
  return Boolean(currentModel()?.capabilities?.includes("vision"));
}

function showCapabilities() {
  const model = currentModel();
  const caps = (model?.capabilities || []).filter((c) => c !== "completion");
  $("model-caps").textContent = caps.length ? caps.join(", ") : "";
  $("attach").title = takesImages() ? "Attach an image" : "This model does not take images";
}

// --- conversations -------------------------------------------------------------------------------------------
function save() {
  chat.conversations.sort((a, b) => b.updatedAt - a.updatedAt);
  const problem = store.saveConversations(chat.conversations, chat.current?.id);
  if (problem) notice(problem);
}

function selectConversation(conversation) {
  chat.current = conversation;
  if (conversation.model && chat.models.some((m) => m.id === conversation.model)) {
    $("model-select").value = conversation.model;
    showCapabilities();
  }
  renderConversationList();
  renderMessages();
}

function startNewConversation() {
  if (chat.current && chat.current.messages.length === 0) {
    selectConversation(chat.current);
  } else {
    const conversation = store.newConversation($("model-select").value);
    chat.conversations.unshift(conversation);
    selectConversation(conversation);
  }
  closeConversationsOnPhone();
  $("prompt").focus();
}

function deleteConversation(conversation) {
  chat.conversations = chat.conversations.filter((c) => c.id !== conversation.id);
  save();
  if (chat.current?.id === conversation.id) {
    chat.current = null;
    if (chat.conversations.length) selectConversation(chat.conversations[0]);
    else startNewConversation();
  } else {
    renderConversationList();
  }
}

function renderConversationList() {
  const list = $("conversation-list");
  list.replaceChildren(
    ...chat.conversations
      .filter((c) => c.messages.length || c === chat.current)
      .map((conversation) => {
        const item = document.createElement("li");
        const open = document.createElement("button");
        open.type = "button";
        open.className = "conversation-open";
        open.textContent = conversation.title || "New chat";
        if (conversation === chat.current) open.setAttribute("aria-current", "true");
        open.addEventListener("click", () => {
          selectConversation(conversation);
          closeConversationsOnPhone();
        });
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "conversation-delete secondary";
        remove.textContent = "×";
        remove.setAttribute("aria-label", `Delete conversation “${conversation.title || "New chat"}”`);
        remove.addEventListener("click", () => deleteConversation(conversation));
        item.append(open, remove);
        return item;
      }),
  );
}

function closeConversationsOnPhone() {
  $("conversations").classList.remove("open");
  $("conversations-toggle").setAttribute("aria-expanded", "false");
}

// --- messages ------------------------------------------------------------------------------------------------
function renderMessages() {
  const box = $("messages");
  const messages = chat.current?.messages || [];
  const actions = { regenerate, busy: () => Boolean(chat.controller) };
  box.replaceChildren(...messages.map((message, index) => messageElement(message, index, actions)));
  if (!messages.length) {
    const empty = document.createElement("p");
    empty.className = "empty muted";
    empty.textContent = "Pick a model and send a message.";
    box.append(empty);
  }
  box.scrollTop = box.scrollHeight;
}

function scheduleRender(message) {
  // One render per animation frame however many chunks arrive: Markdown is re-rendered whole each time.
  if (chat.renderPending) return;
  chat.renderPending = requestAnimationFrame(() => {
    chat.renderPending = null;
    const box = $("messages");
    const index = chat.current?.messages.indexOf(message);
    const article = box.querySelector(`article[data-index="${index}"]`);
    if (!article) return;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    fillMessage(article, message, Boolean(chat.controller));
    if (atBottom) box.scrollTop = box.scrollHeight;
  });
}

// --- sending -------------------------------------------------------------------------------------------------
function samplingFields() {
  const fields = {};
  const number = (key, parse) => {
    const raw = String(chat.settings[key] ?? "").trim();
    if (raw !== "" && Number.isFinite(parse(raw))) fields[key] = parse(raw);
  };
  number("temperature", Number.parseFloat);
  number("top_p", Number.parseFloat);
  number("max_tokens", (v) => Number.parseInt(v, 10));
  number("seed", (v) => Number.parseInt(v, 10));
  return fields;
}

function wireMessages(conversation, upTo) {
  const messages = [];
  const system = chat.settings.system.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const message of conversation.messages.slice(0, upTo)) {
    if (message.role === "assistant" && message.status === "error" && !message.content) continue;
    if (message.role === "user" && message.images?.length) {
      messages.push({
        role: "user",
        content: [
          { type: "text", text: message.content },
          ...message.images.map((url) => ({ type: "image_url", image_url: { url } })),
        ],
      });
    } else {
      messages.push({ role: message.role, content: message.content });
    }
  }
  return messages;
}

async function send() {
  if (chat.controller) return;
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text && !chat.attachments.length) return;
  const model = $("model-select").value;
  if (!model) {
    notice("No chat model to send to.");
    return;
  }
  if (chat.attachments.length && !takesImages()) {
    notice(`${model} does not take images: pick a vision model or remove the images.`);
    return;
  }
  notice("");
  if (!chat.current) startNewConversation();
  const conversation = chat.current;
  conversation.messages.push({ role: "user", content: text, images: chat.attachments.slice() });
  if (conversation.messages.length === 1) conversation.title = text.slice(0, 60) || "Image";
  chat.attachments = [];
  renderAttachments();
  prompt.value = "";
  await answer(conversation);
}

function regenerate(index) {
  const conversation = chat.current;
  if (!conversation || chat.controller) return;
  conversation.messages.splice(index);
  answer(conversation);
}

function mergeToolCalls(calls, deltas) {
  for (const delta of deltas) {
    const index = delta.index ?? calls.length;
    calls[index] ??= { id: "", name: "", arguments: "" };
    if (delta.id) calls[index].id = delta.id;
    if (delta.function?.name) calls[index].name += delta.function.name;
    if (delta.function?.arguments) calls[index].arguments += delta.function.arguments;
  }
}

async function answer(conversation) {
  const model = $("model-select").value;
  const body = {
    model,
    messages: wireMessages(conversation, conversation.messages.length),
    stream: true,
    stream_options: { include_usage: true },
    ...samplingFields(),
  };
  const message = { role: "assistant", model, content: "", reasoning: "", toolCalls: [], status: "streaming" };
  conversation.messages.push(message);
  conversation.model = model;
  conversation.updatedAt = Date.now();
  chat.settings.model = model;
  store.saveSettings(chat.settings);
  const controller = new AbortController();
  chat.controller = controller;
  renderConversationList();
  renderMessages();
  setStreaming(true);
  const started = performance.now();
  let firstAt = null;
  let usage = null;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const event of sseEvents(response)) {
      if (event.data === "[DONE]") break;
      const chunk = JSON.parse(event.data);
      if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        const reasoning = delta.reasoning_content ?? delta.reasoning;
        if (delta.content || reasoning || delta.tool_calls) firstAt ??= performance.now();
        if (delta.content) message.content += delta.content;
        if (reasoning) message.reasoning += reasoning;
        if (delta.tool_calls) mergeToolCalls(message.toolCalls, delta.tool_calls);
        if (choice.finish_reason) message.finish = choice.finish_reason;
      }
      scheduleRender(message);
    }
    message.status = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      message.status = "stopped";
    } else {
      message.status = "error";
      message.error = error.message;
    }
  } finally {
    const ended = performance.now();
    message.stats = answerStats(usage, started, firstAt, ended);
    chat.controller = null;
    setStreaming(false);
    conversation.updatedAt = Date.now();
    save();
    renderMessages();
    renderConversationList();
  }
}

function answerStats(usage, started, firstAt, ended) {
  const stats = { seconds: (ended - started) / 1000 };
  if (firstAt !== null) stats.ttft = (firstAt - started) / 1000;
  if (usage) {
    stats.promptTokens = usage.prompt_tokens;
    stats.completionTokens = usage.completion_tokens;
    stats.cachedTokens = usage.prompt_tokens_details?.cached_tokens || 0;
    // Generation speed: tokens after the first over the time since it came (prompt reading excluded).
    const generating = firstAt !== null ? (ended - firstAt) / 1000 : 0;
    if (usage.completion_tokens > 1 && generating > 0.01) {
      stats.tokensPerSecond = (usage.completion_tokens - 1) / generating;
    }
  }
  return stats;
}

function stop() {
  chat.controller?.abort();
}

function setStreaming(streaming) {
  $("send").hidden = streaming;
  $("stop").hidden = !streaming;
  if (streaming) $("stop").focus({ preventScroll: true });
  else if (document.activeElement === document.body || document.activeElement === $("stop")) $("prompt").focus();
}

// --- attachments ---------------------------------------------------------------------------------------------
async function attach(files) {
  for (const file of files) {
    try {
      chat.attachments.push(await imageToDataUrl(file));
    } catch (error) {
      notice(error.message);
    }
  }
  renderAttachments();
  if (chat.attachments.length && !takesImages()) {
    notice(`${$("model-select").value} does not take images: pick a vision model to send them.`);
  }
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren(
    ...chat.attachments.map((url, index) => {
      const item = document.createElement("div");
      item.className = "attachment";
      const img = document.createElement("img");
      img.src = url;
      img.alt = `Image ${index + 1} to send`;
      const remove = button("×", "remove-attachment", () => {
        chat.attachments.splice(index, 1);
        renderAttachments();
      });
      remove.setAttribute("aria-label", `Remove image ${index + 1}`);
      item.append(img, remove);
      return item;
    }),
  );
}

function notice(text) {
  const element = $("chat-notice");
  element.textContent = text;
  element.hidden = !text;
}

// --- settings ------------------------------------------------------------------------------------------------
const SETTING_INPUTS = {
  "system-prompt": "system",
  temperature: "temperature",
  "top-p": "top_p",
  "max-tokens": "max_tokens",
  seed: "seed",
};

function bindSettings() {
  for (const [id, key] of Object.entries(SETTING_INPUTS)) {
    const input = $(id);
    input.value = chat.settings[key] ?? "";
    input.addEventListener("input", () => {
      chat.settings[key] = input.value;
      store.saveSettings(chat.settings);
    });
  }
  const toggle = $("settings-toggle");
  toggle.addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    toggle.setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) $("system-prompt").focus();
  });
  $("settings").addEventListener("submit", (event) => event.preventDefault());
}

// --- start ---------------------------------------------------------------------------------------------------
export async function initChat() {
  bindSettings();
  const prompt = $("prompt");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && chat.controller) stop();
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", startNewConversation);
  $("attach").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", async (event) => {
    await attach(Array.from(event.target.files || []));
    event.target.value = "";
  });
  const dropZone = document.querySelector(".chat-main");
  dropZone.addEventListener("dragover", (event) => {
    if (!Array.from(event.dataTransfer?.types || []).includes("Files")) return;
    event.preventDefault();
    dropZone.classList.add("dropping");
  });
  dropZone.addEventListener("dragleave", (event) => {
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
  });
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dropping");
    attach(imageFiles(event.dataTransfer));
  });
  prompt.addEventListener("paste", (event) => {
    const files = imageFiles(event.clipboardData);
    if (files.length) {
      event.preventDefault();
      attach(files);
    }
  });
  $("messages").addEventListener("click", (event) => {
    const copyButton = event.target.closest(".copy-code");
    if (copyButton) copyText(copyButton.closest(".code-block").querySelector("pre").textContent, copyButton);
  });
  $("model-select").addEventListener("change", () => {
    showCapabilities();
    chat.settings.model = $("model-select").value;
    store.saveSettings(chat.settings);
  });
  $("conversations-toggle").addEventListener("click", () => {
    const open = $("conversations").classList.toggle("open");
    $("conversations-toggle").setAttribute("aria-expanded", String(open));
  });

  await loadModels();
  if (chat.conversations.length) selectConversation(chat.conversations[0]);
  else startNewConversation();
}
