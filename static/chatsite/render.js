// The reading features of rendered Markdown: code blocks highlighted (highlight.js) with a copy button, math
// rendered by KaTeX (`$...$`, `\(...\)` inline; `$$...$$`, `\[...\]` displayed), a copy button on each message,
// and a throttle for re-rendering a reply while it streams.
//
// Safety: markdown.js sanitises marked's output with DOMPurify first; only then does `enhance` run, on that
// sanitised DOM. Math arrives as the text of a `.math` element and goes to KaTeX with `trust: false` (no \href,
// \includegraphics, \htmlClass...) and `throwOnError: false` (a half-written formula shows as red source, never
// an exception); KaTeX builds its nodes with the DOM and sets their styles through CSSOM, which the CSP's
// `style-src 'self'` allows (style *attributes* in parsed HTML it would block). Code goes to highlight.js as
// text; its output (escaped text in `<span class="hljs-…">`) is sanitised again, allowing spans with classes only.
import hljs from "../vendor/highlight/highlight.min.js";
import katex from "../vendor/katex/katex.mjs";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";

/** While a reply streams, it is re-rendered at most this often (ms): highlighting and KaTeX are not free. */
export const LIVE_RENDER_MS = 100;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
const mathHtml = (text, display) =>
  display ? `<span class="math math-display">${escapeHtml(text)}</span>` : `<span class="math math-inline">${escapeHtml(text)}</span>`;

/**
 * marked extensions that keep TeX away from Markdown (so `a_1 * b_2` is not turned into emphasis) and emit it
 * as the escaped text of a `.math` span. A formula without its closing delimiter yet (a reply still streaming)
 * matches nothing and shows as typed until it is closed.
 */
export const mathExtensions = [
  {
    name: "mathBlock",
    level: "block",
    start(src) {
      return src.match(/^ {0,3}(\$\$|\\\[)/m)?.index;
    },
    tokenizer(src) {
      const found = /^ {0,3}(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])[ \t]*(?:\n+|$)/.exec(src);
      if (found) return { type: "mathBlock", raw: found[0], text: (found[1] ?? found[2]).trim() };
      return undefined;
    },
    renderer(token) {
      return `<p class="math-block">${mathHtml(token.text, true)}</p>\n`;
    },
  },
  {
    name: "mathInline",
    level: "inline",
    start(src) {
      const index = src.search(/\$|\\[[(]/);
      return index < 0 ? undefined : index;
    },
    tokenizer(src) {
      const display = /^\$\$([^$]+?)\$\$/.exec(src) || /^\\\[([\s\S]+?)\\\]/.exec(src);
      if (display) return { type: "mathInline", raw: display[0], text: display[1].trim(), display: true };
      // `$x$`: no space just inside the dollars and no digit right after, so "$5 and $10" stays money.
      const inline = /^\\\(([\s\S]+?)\\\)/.exec(src) || /^\$(?![\s$])([^$\n]+?)(?<!\s)\$(?!\d)/.exec(src);
      if (inline) return { type: "mathInline", raw: inline[0], text: inline[1].trim(), display: false };
      return undefined;
    },
    renderer(token) {
      return mathHtml(token.text, token.display);
    },
  },
];

// Highlighted code by language and text: while a reply streams, only the block still being written is new.
const highlighted = new Map();
const HIGHLIGHT_CACHE = 200;

function highlight(code, language) {
  const key = `${language}\u0000${code}`;
  let html = highlighted.get(key);
  if (html === undefined) {
    html = DOMPurify.sanitize(hljs.highlight(code, { language, ignoreIllegals: true }).value, {
      ALLOWED_TAGS: ["span"],
      ALLOWED_ATTR: ["class"],
    });
    if (highlighted.size >= HIGHLIGHT_CACHE) highlighted.delete(highlighted.keys().next().value);
    highlighted.set(key, html);
  }
  return html;
}

function copyButton(className, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `small copy ${className}`;
  button.textContent = "Copy";
  button.setAttribute("aria-label", label);
  return button;
}

/**
 * Highlight the code blocks and typeset the math in sanitised, rendered Markdown (`root`: a fragment or element
 * not yet shown, or shown). Code blocks get a header with their language and a copy button.
 * @param {DocumentFragment | HTMLElement} root
 */
export function enhance(root) {
  for (const code of root.querySelectorAll("pre > code")) {
    const pre = code.parentElement;
    const language = [...code.classList].find((name) => name.startsWith("language-"))?.slice(9) || "";
    if (language && hljs.getLanguage(language)) {
      code.innerHTML = highlight(code.textContent, language);
      code.classList.add("hljs");
    }
    const block = document.createElement("div");
    block.className = "code-block";
    const head = document.createElement("div");
    head.className = "code-head";
    const name = document.createElement("span");
    name.className = "code-language";
    name.textContent = language || "code";
    head.append(name, copyButton("copy-code", `Copy the ${language || "code"} code`));
    pre.replaceWith(block);
    block.append(head, pre);
  }
  for (const math of root.querySelectorAll(".math")) {
    const source = math.textContent;
    katex.render(source, math, {
      displayMode: math.classList.contains("math-display"),
      throwOnError: false,
      trust: false,
      strict: "ignore",
      maxExpand: 1000,
    });
    math.dataset.tex = source;
  }
}

// The Markdown each rendered element was made from, for the message copy button.
const sources = new WeakMap();

/**
 * Remember the Markdown `element` shows, so that its message's copy button copies the source, not the render.
 * @param {HTMLElement} element
 * @param {string} text
 */
export function rememberSource(element, text) {
  sources.set(element, text);
}

/**
 * Give a message element (`article.message` with a `.who-said` and a `.body`) a button that copies its text:
 * the Markdown of a reply, the text of anything else.
 * @param {HTMLElement} article
 */
export function addMessageCopy(article) {
  article.querySelector(".who-said")?.append(copyButton("copy-message", "Copy this message"));
}

async function writeClipboard(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on another host than localhost: the old way, through a selected off-screen text area.
  const area = document.createElement("textarea");
  area.value = text;
  area.className = "sr-only";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

// One listener for every copy button: replies are re-rendered while they stream, so a button can be replaced
// between the press and the click.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button.copy") : null;
  if (!button) return;
  let text = null;
  if (button.classList.contains("copy-code")) {
    text = button.closest(".code-block")?.querySelector("pre code")?.textContent ?? null;
  } else if (button.classList.contains("copy-message")) {
    const body = button.closest(".message")?.querySelector(".body");
    if (body) text = sources.get(body) ?? body.innerText;
  }
  if (text === null) return;
  try {
    await writeClipboard(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
});

/**
 * A throttled renderer for a reply that is still streaming: `schedule()` renders `textOf()` into `element` at
 * most every LIVE_RENDER_MS (the first at once), then calls `after` (e.g. scroll). The final render is the
 * caller's (renderMarkdown when the reply ends); a render still scheduled then shows the same text again.
 * @param {(element: HTMLElement, text: string) => void} render
 * @param {HTMLElement} element
 * @param {() => string} textOf
 * @param {() => void} [after]
 * @returns {() => void} schedule
 */
export function liveRenderer(render, element, textOf, after) {
  let last = 0;
  let timer = null;
  const run = () => {
    timer = null;
    last = performance.now();
    render(element, textOf());
    if (after) after();
  };
  return () => {
    if (timer !== null) return;
    const wait = Math.max(0, last + LIVE_RENDER_MS - performance.now());
    timer = setTimeout(() => requestAnimationFrame(run), wait);
  };
}
