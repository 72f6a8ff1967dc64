// One chat message as a DOM element: role, images, reasoning (collapsible), Markdown content, tool calls, figures
// and its buttons. `fillMessage` writes the parts that change while an answer streams in.

import { formatCount, formatRate, formatSeconds } from "./format.js";
import { renderMarkdown } from "./markdown.js";

// actions: {regenerate(index), busy() -> true while an answer is being written}
export function messageElement(message, index, actions) {
  const article = document.createElement("article");
  article.className = `message ${message.role}`;
  article.dataset.index = String(index);
  const head = document.createElement("header");
  head.className = "message-head";
  head.textContent = message.role === "user" ? "You" : message.model || "Assistant";
  article.append(head);

  if (message.images?.length || message.imagesDropped) {
    const images = document.createElement("div");
    images.className = "message-images";
    for (const [n, url] of (message.images || []).entries()) {
      const img = document.createElement("img");
      img.src = url;
      img.alt = `Attached image ${n + 1}`;
      images.append(img);
    }
    if (message.imagesDropped) {
      const dropped = document.createElement("span");
      dropped.className = "muted";
      dropped.textContent = `${message.imagesDropped} image(s) not kept (browser storage was full)`;
      images.append(dropped);
    }
    article.append(images);
  }

  const reasoning = document.createElement("details");
  reasoning.className = "reasoning";
  const summary = document.createElement("summary");
  summary.textContent = "Reasoning";
  const reasoningBody = document.createElement("div");
  reasoningBody.className = "reasoning-body markdown";
  reasoning.append(summary, reasoningBody);
  const content = document.createElement("div");
  content.className = message.role === "assistant" ? "content markdown" : "content plain";
  const tools = document.createElement("div");
  tools.className = "tool-calls";
  const foot = document.createElement("footer");
  foot.className = "message-foot";
  const stats = document.createElement("span");
  stats.className = "stats";
  const buttons = document.createElement("span");
  buttons.className = "message-buttons";
  const copy = button("Copy", "copy-message", () => copyText(message.content, copy));
  copy.setAttribute("aria-label", `Copy message ${index + 1}`);
  buttons.append(copy);
  if (message.role === "assistant") {
    const again = button("Regenerate", "regenerate", () => actions.regenerate(index));
    again.setAttribute("aria-label", "Regenerate this answer");
    buttons.append(again);
  }
  foot.append(stats, buttons);
  article.append(reasoning, content, tools, foot);
  fillMessage(article, message, actions.busy());
  return article;
}

export function button(label, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = `secondary small ${className}`;
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

// Writes a message's changing parts into its element (called again as an answer streams in).

export function fillMessage(article, message, busy) {
  const streaming = message.status === "streaming";
  article.classList.toggle("streaming", streaming);
  // Screen readers announce the answer once it is complete, not every re-render while it streams.
  article.setAttribute("aria-busy", String(streaming));
  const content = article.querySelector(".content");
  if (message.role === "assistant") content.innerHTML = renderMarkdown(message.content);
  else content.textContent = message.content;
  const reasoning = article.querySelector(".reasoning");
  reasoning.hidden = !message.reasoning;
  if (message.reasoning) {
    article.querySelector(".reasoning-body").innerHTML = renderMarkdown(message.reasoning);
    // Open while the model is still thinking, closed afterwards (a click keeps it open).
    if (streaming && !message.content) reasoning.open = true;
  }
  const tools = article.querySelector(".tool-calls");
  tools.hidden = !message.toolCalls?.length;
  tools.replaceChildren(
    ...(message.toolCalls || []).map((call) => {
      const box = document.createElement("div");
      box.className = "tool-call";
      const name = document.createElement("div");
      name.className = "tool-name";
      name.textContent = `Tool call: ${call.name || "(unnamed)"}`;
      const args = document.createElement("pre");
      args.textContent = prettyJson(call.arguments);
      box.append(name, args);
      return box;
    }),
  );
  article.querySelector(".stats").textContent = statsText(message);
  const error = article.querySelector(".message-error");
  if (message.error) {
    const line = error || document.createElement("p");
    line.className = "message-error";
    line.setAttribute("role", "alert");
    line.textContent = message.error;
    if (!error) content.after(line);
  } else if (error) {
    error.remove();
  }
  const regenerate = article.querySelector(".regenerate");
  if (regenerate) regenerate.disabled = streaming || busy;
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text || "";
  }
}

function statsText(message) {
  if (message.role !== "assistant") return "";
  if (message.status === "streaming") return message.content || message.reasoning ? "" : "Waiting for the model…";
  const s = message.stats;
  if (!s) return "";
  const parts = [];
  if (s.completionTokens !== undefined) {
    const cached = s.cachedTokens ? ` (${formatCount(s.cachedTokens)} cached)` : "";
    parts.push(`${formatCount(s.promptTokens)} prompt${cached} + ${formatCount(s.completionTokens)} tokens`);
  }
  if (s.tokensPerSecond) parts.push(`${formatRate(s.tokensPerSecond)} tok/s`);
  if (s.ttft !== undefined) parts.push(`first token ${formatSeconds(s.ttft)}`);
  parts.push(formatSeconds(s.seconds));
  if (message.status === "stopped") parts.push("stopped");
  else if (message.finish === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}

export async function copyText(text, source) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // The Clipboard API needs a secure context: plain http on a LAN address falls back to a hidden textarea.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  if (source) {
    const label = source.textContent;
    source.textContent = "Copied";
    setTimeout(() => {
      source.textContent = label;
    }, 1200);
  }
}
