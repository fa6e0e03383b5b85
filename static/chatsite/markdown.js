// Markdown to safe HTML: marked renders, DOMPurify removes anything that could run script or inject markup
// (script and style elements, event handler attributes, javascript: URLs...). Nothing the model or a user
// writes reaches the page unsanitised.
import { marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";

marked.setOptions({ gfm: true, breaks: true });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Links open in a new tab without giving that tab a handle on this one.
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/**
 * Render Markdown `text` into `element`, sanitised.
 * @param {HTMLElement} element
 * @param {string} text
 */
export function renderMarkdown(element, text) {
  const html = marked.parse(text, { async: false });
  element.innerHTML = DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
    FORBID_ATTR: ["style"],
  });
}
