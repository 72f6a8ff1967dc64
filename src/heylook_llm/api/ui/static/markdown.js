// A small Markdown renderer for model answers: paragraphs, headings, lists (nested), block quotes, fenced code
// blocks, tables, rules, and inline code, emphasis, strike-through and links.
//
// Safety: every piece of the source is HTML-escaped before it reaches the output; the only tags in the result are
// the ones written here, and links are limited to http(s) and mailto. Model output can therefore never inject
// markup or script (the page's Content-Security-Policy would block inline script as a second line).
//
// It renders text that is still streaming: an unclosed code fence becomes a code block that grows.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

export function renderMarkdown(source) {
  // NUL marks the placeholders of rendered inline pieces: it may not come from the source.
  const text = String(source).replace(/\r\n?/g, "\n").replace(/\u0000/g, "\uFFFD");
  return renderBlocks(text.split("\n"));
}

const BLANK = /^\s*$/;
const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?: *\1){2,} *$/;
const QUOTE = /^ {0,3}>/;
const TABLE_RULE = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;

function renderBlocks(lines) {
  const out = [];
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) out.push(`<p>${renderInline(paragraph.join("\n"))}</p>`);
    paragraph = [];
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      flush();
      const body = [];
      i += 1;
      while (i < lines.length && !isClosingFence(lines[i], fence[1])) body.push(lines[i++]);
      i += 1;
      out.push(codeBlock(body.join("\n"), fence[2]));
    } else if (BLANK.test(line)) {
      flush();
      i += 1;
    } else if (HEADING.test(line)) {
      flush();
      const [, hashes, title] = line.match(HEADING);
      out.push(`<h${hashes.length}>${renderInline(title)}</h${hashes.length}>`);
      i += 1;
    } else if (RULE.test(line)) {
      flush();
      out.push("<hr>");
      i += 1;
    } else if (QUOTE.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].replace(/^ {0,3}> ?/, ""));
      out.push(`<blockquote>${renderBlocks(quoted)}</blockquote>`);
    } else if (listItem(line)) {
      flush();
      i = renderList(lines, i, out);
    } else if (isTableStart(lines, i)) {
      flush();
      i = renderTable(lines, i, out);
    } else {
      paragraph.push(line);
      i += 1;
    }
  }
  flush();
  return out.join("");
}

function isClosingFence(line, opening) {
  const match = line.match(/^ {0,3}(`{3,}|~{3,})\s*$/);
  return match !== null && match[1][0] === opening[0] && match[1].length >= opening.length;
}

function codeBlock(code, language) {
  const lang = escapeHtml(language || "");
  const label = lang ? `<span class="code-lang">${lang}</span>` : "<span></span>";
  const cls = lang ? ` class="language-${lang}"` : "";
  return (
    `<div class="code-block"><div class="code-head">${label}` +
    `<button type="button" class="copy-code">Copy code</button></div>` +
    `<pre><code${cls}>${escapeHtml(code)}</code></pre></div>`
  );
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || listItem(line) !== null;
}

// --- lists ---------------------------------------------------------------------------------------------------
function listItem(line) {
  const match = line.match(/^( *)([-*+]|\d{1,9}[.)])(?: +(.*)|$)/);
  if (!match) return null;
  return {
    indent: match[1].length,
    ordered: /\d/.test(match[2]),
    start: parseInt(match[2], 10),
    content: match[3] ?? "",
    width: match[1].length + match[2].length + 1,
  };
}

function indentOf(line) {
  return line.match(/^ */)[0].length;
}

function isSibling(item, first) {
  return item !== null && item.indent <= first.indent + 1 && item.ordered === first.ordered;
}

function renderList(lines, start, out) {
  const first = listItem(lines[start]);
  const items = [];
  let current = null;
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const item = listItem(line);
    if (isSibling(item, first)) {
      current = [item.content];
      items.push(current);
    } else if (BLANK.test(line)) {
      let next = i + 1;
      while (next < lines.length && BLANK.test(lines[next])) next += 1;
      const follows =
        next < lines.length && (indentOf(lines[next]) > first.indent || isSibling(listItem(lines[next]), first));
      if (!follows) break;
      current.push("");
    } else if (indentOf(line) > first.indent) {
      current.push(line.slice(Math.min(indentOf(line), first.width)));
    } else if (item !== null || startsBlock(line)) {
      break;
    } else {
      current.push(line); // a lazy continuation of the item's text
    }
    i += 1;
  }
  const tag = first.ordered ? "ol" : "ul";
  const startAttr = first.ordered && first.start !== 1 ? ` start="${first.start}"` : "";
  out.push(`<${tag}${startAttr}>${items.map((item) => `<li>${renderItem(item)}</li>`).join("")}</${tag}>`);
  return i;
}

function renderItem(lines) {
  const html = renderBlocks(lines);
  // A tight item (text, maybe followed by a nested list) shows without paragraph spacing.
  if (html.startsWith("<p>") && !lines.includes("")) {
    const end = html.indexOf("</p>");
    return html.slice(3, end) + html.slice(end + 4);
  }
  return html;
}

// --- tables --------------------------------------------------------------------------------------------------
function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function isTableStart(lines, i) {
  return (
    lines[i].includes("|") &&
    i + 1 < lines.length &&
    lines[i + 1].includes("-") &&
    TABLE_RULE.test(lines[i + 1]) &&
    splitRow(lines[i]).length === splitRow(lines[i + 1]).length
  );
}

function renderTable(lines, start, out) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((cell) => {
    if (cell.startsWith(":") && cell.endsWith(":")) return ' class="align-center"';
    if (cell.endsWith(":")) return ' class="align-right"';
    return "";
  });
  let i = start + 2;
  const rows = [];
  while (i < lines.length && lines[i].includes("|") && !BLANK.test(lines[i])) rows.push(splitRow(lines[i++]));
  const cells = (row, tag) =>
    header.map((_, c) => `<${tag}${aligns[c]}>${renderInline(row[c] ?? "")}</${tag}>`).join("");
  out.push(
    `<div class="table-scroll"><table><thead><tr>${cells(header, "th")}</tr></thead>` +
      `<tbody>${rows.map((row) => `<tr>${cells(row, "td")}</tr>`).join("")}</tbody></table></div>`,
  );
  return i;
}

// --- inline --------------------------------------------------------------------------------------------------
function link(url, labelHtml) {
  return `<a href="${escapeHtml(url)}" target="_blank" rel="noopener noreferrer">${labelHtml}</a>`;
}

function emphasis(html) {
  return html
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>")
    .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])?\*(?![*\w])/g, (m, before, inner) =>
      inner === undefined ? m : `${before}<em>${inner}</em>`,
    )
    .replace(/(^|[^_\w])_(?=[^\s_])([^_\n]*?[^\s_])?_(?![_\w])/g, (m, before, inner) =>
      inner === undefined ? m : `${before}<em>${inner}</em>`,
    );
}

export function renderInline(source) {
  const kept = [];
  const keep = (html) => `\u0000${kept.push(html) - 1}\u0000`;
  let text = source
    // Code spans first: their content is literal.
    .replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, ticks, code) =>
      keep(`<code>${escapeHtml(code.length > 2 && /^ .* $/s.test(code) ? code.slice(1, -1) : code)}</code>`),
    )
    // Backslash escapes keep the next character literal.
    .replace(/\\([\\`*_{}[\]()#+\-.!|~<>])/g, (_, c) => keep(escapeHtml(c)))
    .replace(/\[([^\]\n]+)\]\(\s*((?:https?:\/\/|mailto:)[^\s)]+)(?:\s+"[^"\n]*")?\s*\)/g, (_, label, url) =>
      keep(link(url, emphasis(escapeHtml(label)))),
    )
    .replace(/<((?:https?:\/\/|mailto:)[^\s>]+)>/g, (_, url) => keep(link(url, escapeHtml(url))))
    .replace(/\bhttps?:\/\/[^\s<>"'`\u0000]*[^\s<>"'`\u0000.,;:!?)\]]/g, (url) => keep(link(url, escapeHtml(url))));
  text = emphasis(escapeHtml(text)).replace(/\n/g, "<br>");
  // Kept pieces may hold other kept pieces (a code span inside a link's label): restore until none are left.
  for (let depth = 0; depth < 4 && text.includes("\u0000"); depth += 1) {
    text = text.replace(/\u0000(\d+)\u0000/g, (_, n) => kept[Number(n)]);
  }
  return text;
}
