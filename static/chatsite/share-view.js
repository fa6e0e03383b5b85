// The share-link page (/s/<token>): a chat's current branch, read-only, for anyone with the link. It reads the
// chat through GET /api/shares/<token>, asks again every POLL_MS for new messages, and follows a reply that is
// being written through GET /api/shares/<token>/messages/<ref>/stream (resuming with Last-Event-ID when the
// connection drops). When the link is revoked or expires, the page empties and says so.
import { readEvents } from "./sse.js";
import { allowImageHosts, renderMarkdown } from "./markdown.js";
import { addMessageCopy, liveRenderer } from "./render.js";

const boot = JSON.parse(document.getElementById("boot").textContent);
allowImageHosts(boot.imageHosts);
const base = `/api/shares/${encodeURIComponent(boot.token)}`;
const POLL_MS = 1500;
const RESUME_ATTEMPTS = 5;
const ui = {
  title: document.getElementById("share-title"),
  messages: document.getElementById("messages"),
  status: document.getElementById("share-status"),
};
// ref -> {element, following}
const shown = new Map();
let closed = false;

function close(message) {
  closed = true;
  ui.messages.replaceChildren();
  ui.title.textContent = "Not available";
  ui.status.textContent = message || "This share link does not exist or is no longer available.";
  document.body.classList.add("share-closed");
}

function messageElement(message) {
  const element = document.createElement("article");
  element.className = `message ${message.role}`;
  element.dataset.ref = message.ref;
  const who = document.createElement("div");
  who.className = "who-said";
  who.textContent = message.role === "user" ? "User" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  element.append(who, body, meta);
  addMessageCopy(element);
  ui.messages.append(element);
  return element;
}

function setSources(element, sources) {
  element.querySelector(".sources")?.remove();
  if (!sources || !sources.length) return;
  const box = document.createElement("section");
  box.className = "sources";
  box.setAttribute("aria-label", "Sources");
  const list = document.createElement("ol");
  for (const source of sources) {
    const item = document.createElement("li");
    const title = document.createElement("strong");
    title.textContent = `[${source.number ?? "?"}] ${source.title || "Untitled"}`;
    const snippet = document.createElement("span");
    snippet.textContent = source.snippet ? ` ${source.snippet}` : "";
    item.append(title, snippet);
    list.append(item);
  }
  box.append(list);
  element.querySelector(".meta").before(box);
}

function setMeta(element, status, finishReason) {
  const meta = element.querySelector(".meta");
  element.classList.toggle("generating", status === "queued" || status === "streaming");
  element.setAttribute("aria-busy", String(status === "queued" || status === "streaming"));
  const labels = { queued: "Waiting for the model…", streaming: "Generating…", failed: "The reply failed." };
  meta.textContent = labels[status] || (finishReason && finishReason !== "stop" ? `Finished: ${finishReason}` : "");
}

function show(message) {
  let entry = shown.get(message.ref);
  if (!entry) {
    entry = { element: messageElement(message), following: false, text: "" };
    shown.set(message.ref, entry);
  }
  if (entry.following) return;
  const body = entry.element.querySelector(".body");
  // What people typed is shown as typed; replies go through the chat page's sanitising renderer.
  if (message.role === "user") body.textContent = message.content;
  else if (entry.text !== message.content) renderMarkdown(body, message.content);
  entry.text = message.content;
  setSources(entry.element, message.sources);
  setMeta(entry.element, message.status, message.finishReason);
  if (message.role === "assistant" && (message.status === "queued" || message.status === "streaming")) {
    follow(message.ref, entry);
  }
}

/** Follow a reply's events into its element until its end (or the link closes), resuming on a drop. */
async function follow(ref, entry) {
  entry.following = true;
  entry.text = "";
  const body = entry.element.querySelector(".body");
  let lastId = null;
  const render = liveRenderer(renderMarkdown, body, () => entry.text);
  setMeta(entry.element, "streaming");
  for (let attempt = 0; attempt <= RESUME_ATTEMPTS && !closed; attempt += 1) {
    const headers = { Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": lastId } : {}) };
    const response = await fetch(`${base}/messages/${ref}/stream`, { headers, credentials: "same-origin" });
    if (response.status === 404) return close();
    if (!response.ok) break;
    let ended = false;
    try {
      for await (const event of readEvents(response)) {
        const data = JSON.parse(event.data);
        if (event.id) lastId = event.id;
        if (data.type === "content") {
          entry.text += data.delta;
          render();
        } else if (data.type === "sources") {
          setSources(entry.element, data.sources);
        } else if (data.type === "end") {
          setMeta(entry.element, "completed", data.finishReason);
          ended = true;
        } else if (data.type === "error") {
          if (data.error === "share_unavailable") return close(data.message);
          setMeta(entry.element, "failed");
          ended = true;
        }
        if (ended) break;
      }
    } catch (error) {
      console.warn("stream interrupted", error);
    }
    if (ended) break;
    await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
  }
  renderMarkdown(body, entry.text);
  entry.following = false;
}

async function load() {
  if (closed) return;
  let response;
  try {
    response = await fetch(base, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  } catch {
    return; // offline for a moment: ask again at the next tick
  }
  if (response.status === 404) return close();
  if (response.status === 401) {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
    return;
  }
  if (!response.ok) return;
  const chat = await response.json();
  ui.title.textContent = chat.title || "Shared chat";
  document.title = `${chat.title || "Shared chat"} · chatsite`;
  // Another branch became the current one (a regenerated reply): drop what left it.
  const refs = new Set(chat.messages.map((message) => message.ref));
  for (const [ref, entry] of shown) {
    if (!refs.has(ref)) {
      entry.element.remove();
      shown.delete(ref);
    }
  }
  for (const message of chat.messages) show(message);
  ui.status.textContent = chat.messages.length ? "" : "No messages yet.";
}

async function poll() {
  await load();
  if (!closed) setTimeout(poll, POLL_MS);
}

poll();
