// The chat page: a sidebar of chats, the open chat's messages, a composer; everything through the JSON API.
// Replies stream in over fetch + SSE, rendered as sanitised Markdown as they arrive; a reply interrupted by
// the network is resumed from its last event id.
import { api, listAll, request } from "./api.js";
import { readEvents } from "./sse.js";
import { allowImageHosts, renderMarkdown } from "./markdown.js";
import { setupLibrary } from "./library.js";
import { setupShare } from "./share.js";
import { MessageTree, siblingControls, startEdit } from "./branches.js";
// Reading features (issue 18.6): copy buttons and the throttled live render; highlighting and math are markdown.js's.
import { addMessageCopy, liveRenderer } from "./render.js";
import { setupCompare } from "./compare.js";

const boot = JSON.parse(document.getElementById("boot").textContent);
allowImageHosts(boot.imageHosts);
const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  toggle: $("toggle-sidebar"),
  chatList: $("chat-list"),
  newChat: $("new-chat"),
  title: $("chat-title"),
  renameButton: $("rename-chat"),
  renameForm: $("rename-form"),
  renameInput: $("rename-input"),
  renameCancel: $("rename-cancel"),
  deleteButton: $("delete-chat"),
  modelPicker: $("model-picker"),
  workflowPicker: $("workflow-picker"),
  messages: $("messages"),
  empty: $("empty-state"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  announce: $("announce"),
  attach: $("attach"),
  attachCount: $("attach-count"),
  attachPicker: $("attach-picker"),
  attachFilter: $("attach-filter"),
  attachStatus: $("attach-status"),
  attachList: $("attach-list"),
  attachDone: $("attach-done"),
  chips: $("attachment-chips"),
};

const state = { chats: [], chat: null, running: null };
// Documents: what is known of each (id -> {title, collection, status}), the ready ones to pick from, and the
// ids attached to the next message.
const docs = { known: new Map(), ready: [], attached: [] };
const STEP_LABELS = {
  system_prompt: "Instructions",
  rewrite_query: "Rewriting the question",
  sql: "Querying the database",
  retrieve: "Searching your documents",
  generate: "Writing the answer",
  classify: "Understanding the question",
  retrieve_schema: "Searching the database's tables",
  generate_sql: "Writing SQL",
  execute_sql: "Running the query",
  summarize: "Summarizing the results",
};
const RESUME_ATTEMPTS = 5;
// Search, pins, archive, export and import (library.js).
const library = setupLibrary({
  openChat: (chatId) => openChat(chatId),
  reloadChats: () => loadChats(),
  getChat: () => state.chat,
  setChat: (chat) => {
    state.chat = chat;
  },
  announce: (text) => announce(text),
  closeSidebar: () => setSidebar(false),
});

// Share links (share.js).
const share = setupShare({ getChat: () => state.chat, announce: (text) => announce(text) });

// --- Models side by side (compare.js) -------------------------------------------------------------------

const compare = setupCompare({
  ensureChat: async () => {
    if (state.chat) return state.chat;
    const chat = await api("POST", "/api/chats", { modelId: ui.modelPicker.value, workflowId: null });
    state.chat = chat;
    history.pushState({}, "", `/c/${chat.id}`);
    showChatControls(true);
    return chat;
  },
  addUserMessage: (text) => {
    removeRegenerate();
    addUserMessage(text);
  },
  shownLeaf: (chatId) => shownLeaf(chatId),
  setRunning: (running) => setRunning(running),
  continueFrom: async (chatId, replyId) => {
    Object.assign(branch, { chatId, tree: new MessageTree(await listAll(`/api/chats/${chatId}/messages`)) });
    if (!state.chat || state.chat.id !== chatId) return;
    renderBranch(replyId);
    addRegenerate();
    ui.messages.dataset.branchLeaf = replyId; // the page's branch is known (tests wait for it)
    ui.prompt.focus();
  },
  announce: (text) => announce(text),
  scrollToEnd: () => scrollToEnd(),
  userId: boot.userId,
});

/** The composer's send when Compare is on (or its replies await a pick): true when it was handled here. */
async function compareHandles(text) {
  if (compare.awaitingPick(state.chat && state.chat.id)) {
    announce("Choose a reply to continue with first (Continue with this).");
    return true;
  }
  if (!compare.isOpen()) return false;
  ui.prompt.value = "";
  try {
    await compare.submit(text);
    if (state.chat && !state.chat.title) await refreshChat(state.chat.id);
  } catch (error) {
    setRunning(null);
    ui.prompt.value = text; // nothing is lost
    announce(error.message);
  }
  return true;
}

// --- API -------------------------------------------------------------------------------------------------

function announce(text) {
  ui.announce.textContent = text;
}

const SOURCE_NAMES = {
  openai: "OpenAI-compatible API",
  rag_stream: "RAG chat stream API",
  search_session: "search session API",
  connect_rpc: "Connect-RPC stream",
  text_to_sql: "text-to-SQL API",
};

// --- Sidebar ---------------------------------------------------------------------------------------------

async function loadChats() {
  const page = await api("GET", library.chatListPath());
  state.chats = page.results;
  renderChatList();
}

function renderChatList() {
  ui.chatList.replaceChildren(
    ...state.chats.map((chat) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `/c/${chat.id}`;
      link.textContent = chat.title || "Untitled chat";
      link.dataset.chatId = chat.id;
      if (chat.source && chat.source !== "web") {
        // Started by a program through another protocol (the OpenAI API, seed 002 or seed 003).
        const badge = document.createElement("span");
        badge.className = "source-badge";
        badge.textContent = "API";
        badge.title = `Started through the ${SOURCE_NAMES[chat.source] || "API"}`;
        link.prepend(badge);
      }
      library.decorateChatLink(link, chat);
      if (state.chat && state.chat.id === chat.id) link.setAttribute("aria-current", "page");
      link.addEventListener("click", (event) => {
        event.preventDefault();
        openChat(chat.id, { push: true });
        setSidebar(false);
      });
      item.append(link);
      return item;
    }),
  );
}

function setSidebar(open) {
  ui.app.classList.toggle("sidebar-open", open);
  ui.toggle.setAttribute("aria-expanded", String(open));
}

// --- Pickers ---------------------------------------------------------------------------------------------

async function loadPickers() {
  const [models, workflows] = await Promise.all([api("GET", "/api/models"), api("GET", "/api/workflows")]);
  ui.modelPicker.replaceChildren(
    ...models.results.map((model) => new Option(model.name, model.id)),
  );
  const active = workflows.results.filter((workflow) => workflow.isActive);
  ui.workflowPicker.replaceChildren(
    new Option("None", ""),
    ...active.map((workflow) => new Option(workflow.shared ? `${workflow.name} (shared)` : workflow.name, workflow.id)),
  );
}

function selectIfPresent(select, value) {
  if (value && [...select.options].some((option) => option.value === value)) select.value = value;
}

// --- Messages --------------------------------------------------------------------------------------------

function showEmpty(show) {
  ui.empty.hidden = !show;
}

function messageElement(role) {
  const element = document.createElement("article");
  element.className = `message ${role}`;
  const who = document.createElement("div");
  who.className = "who-said";
  who.textContent = { user: "You", system: "System" }[role] || "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  if (role === "assistant") {
    const generating = document.createElement("span");
    generating.className = "generating-label";
    generating.textContent = "Generating…";
    meta.append(generating);
  }
  element.append(who, body, meta);
  if (role !== "system") addMessageCopy(element);
  ui.messages.append(element);
  showEmpty(false);
  return element;
}

function addUserMessage(text, attachments = []) {
  const element = messageElement("user");
  // What people type is shown as typed: text, never markup.
  element.querySelector(".body").textContent = text;
  if (attachments.length) {
    const list = document.createElement("ul");
    list.className = "chips message-attachments";
    list.setAttribute("aria-label", "Attached documents");
    for (const id of attachments) list.append(attachmentChip(id));
    element.querySelector(".body").after(list);
  }
  return element;
}

/** A reply being shown: collects deltas, renders at most once per frame, shows its outcome. */
class ReplyView {
  constructor(element) {
    this.element = element || messageElement("assistant");
    this.body = this.element.querySelector(".body");
    this.meta = this.element.querySelector(".meta");
    this.text = "";
    // Re-rendered at most every ~100 ms while streaming (render.js): highlighting and math have a cost.
    this.scheduleRender = liveRenderer(renderMarkdown, this.body, () => this.text, scrollToEnd);
  }

  append(delta) {
    this.text += delta;
    this.scheduleRender();
  }

  setText(text) {
    this.text = text;
    renderMarkdown(this.body, text);
  }

  /** A workflow step's progress, shown above the reply (`step` events). */
  step(data) {
    let list = this.element.querySelector(".steps");
    if (!list) {
      list = document.createElement("ol");
      list.className = "steps";
      list.setAttribute("aria-label", "Workflow steps");
      this.body.before(list);
    }
    let item = list.querySelector(`[data-index="${data.index}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.index = data.index;
      list.append(item);
    }
    const label = STEP_LABELS[data.step] || data.step;
    const state = { started: "…", finished: "done", failed: "failed" }[data.state] || data.state;
    item.className = `step ${data.state}`;
    item.textContent = `${label}: ${state}${data.note ? ` (${data.note})` : ""}`;
  }

  /** A tool call and, later, its result (`tool_call`, `tool_result` events or a saved message's toolCalls). */
  tool(data) {
    let box = this.element.querySelector(`details.tool[data-call-id="${CSS.escape(data.callId)}"]`);
    if (!box) {
      box = document.createElement("details");
      box.className = "tool";
      box.dataset.callId = data.callId;
      const summary = document.createElement("summary");
      const args = document.createElement("pre");
      args.className = "tool-args";
      box.append(summary, args);
      this.body.before(box);
    }
    box.querySelector("summary").textContent = `Tool: ${data.toolName}`;
    if ("toolArgs" in data) box.querySelector(".tool-args").textContent = JSON.stringify(data.toolArgs, null, 2);
    if ("result" in data || "error" in data) {
      const out = box.querySelector(".tool-result") || document.createElement("pre");
      out.className = "tool-result";
      out.textContent = data.error ? `Error: ${data.error}` : JSON.stringify(data.result, null, 2);
      box.append(out);
      box.querySelector("summary").textContent = `Tool: ${data.toolName} ${data.error ? "(failed)" : "(done)"}`;
    }
  }

  /** The numbered passages the reply was written from (`sources` event or a saved message's sources). */
  sources(sources) {
    this.element.querySelector(".sources")?.remove();
    if (!sources || !sources.length) return;
    const box = document.createElement("section");
    box.className = "sources";
    box.setAttribute("aria-label", "Sources");
    const list = document.createElement("ol");
    sources.forEach((source, index) => list.append(sourceItem(source, index)));
    box.append(list);
    this.meta.before(box);
  }

  generating(on) {
    this.element.classList.toggle("generating", on);
    this.element.setAttribute("aria-busy", String(on));
  }

  /** The reply waits for a worker slot: say so, with how many replies are ahead when that is known. */
  queued(position) {
    const label = this.element.querySelector(".generating-label");
    if (!label) return;
    label.textContent =
      position === null || position === undefined ? "Waiting for the model…" : `Waiting for the model: ${position} ahead`;
  }

  /** The reply's first text (or step) arrived: it is no longer waiting. */
  started() {
    const label = this.element.querySelector(".generating-label");
    if (label) label.textContent = "Generating…";
  }

  finish({ usage, finishReason, status }) {
    this.generating(false);
    renderMarkdown(this.body, this.text);
    const parts = [];
    if (usage) parts.push(`${usage.promptTokens} prompt + ${usage.completionTokens} completion tokens`);
    if (finishReason === "cancelled" || status === "cancelled") parts.push("stopped");
    else if (finishReason === "length") parts.push("cut at the length limit");
    this.addMeta(parts.join(" · "));
  }

  fail(code, message) {
    this.generating(false);
    renderMarkdown(this.body, this.text);
    const error = document.createElement("div");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.textContent = `${message} (${code})`;
    this.body.after(error);
  }

  addMeta(text) {
    if (!text) return;
    const span = document.createElement("span");
    span.className = "usage";
    span.textContent = text;
    this.meta.append(span);
  }
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function renderSaved(message) {
  if (message.role === "user") {
    addUserMessage(message.content, message.attachments || []).id = `message-${message.id}`;
    return null;
  }
  if (message.role === "system") {
    // A program's own system prompt (OpenAI API): shown as plain text, never as Markdown.
    messageElement("system").querySelector(".body").textContent = message.content;
    return null;
  }
  const view = new ReplyView();
  view.element.dataset.messageId = message.id;
  view.element.id = `message-${message.id}`; // search results link here (#message-<id>)
  for (const call of message.toolCalls || []) view.tool(call);
  view.setText(message.content);
  view.sources(message.sources);
  if (message.status === "failed" && message.error) view.fail(message.error.code, message.error.message);
  else if (message.status === "completed" || message.status === "cancelled") view.finish(message);
  return view;
}

// --- Streaming -------------------------------------------------------------------------------------------

function setRunning(running) {
  state.running = running;
  ui.send.hidden = Boolean(running);
  ui.stop.hidden = !running;
  ui.send.disabled = Boolean(running);
}

/** Read a reply's SSE response into `view`; resume from the last event id if the connection drops. */
async function followReply(response, view, chatId) {
  let lastId = null;
  let messageId = view.element.dataset.messageId || null;
  setRunning({ messageId, view });
  view.generating(true);
  for (let attempt = 0; ; attempt += 1) {
    let ended = false;
    try {
      for await (const event of readEvents(response)) {
        const data = JSON.parse(event.data);
        if (event.id) lastId = event.id;
        if (data.type === "start") {
          messageId = data.messageId;
          view.element.dataset.messageId = messageId;
          state.running = { messageId, view };
        } else if (data.type === "queued") {
          view.queued(data.position);
        } else if (data.type === "content") {
          view.started();
          view.append(data.delta);
        } else if (data.type === "sources") {
          view.sources(data.sources);
        } else if (data.type === "step") {
          view.started();
          view.step(data);
        } else if (data.type === "tool_call" || data.type === "tool_result") {
          view.tool(data);
        } else if (data.type === "end") {
          view.finish(data);
          ended = true;
          announce("The reply is complete.");
        } else if (data.type === "error") {
          view.fail(data.error, data.message);
          ended = true;
          announce(`The reply failed: ${data.message}`);
        }
        if (ended) break;
      }
    } catch (error) {
      console.warn("stream interrupted", error);
    }
    if (ended || !messageId || attempt >= RESUME_ATTEMPTS || (state.chat && state.chat.id !== chatId)) break;
    // The connection dropped before the end: the reply goes on in the worker, so pick it up again.
    await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
    response = await request("GET", `/api/chats/${chatId}/messages/${messageId}/stream`, undefined, {
      Accept: "text/event-stream",
      ...(lastId ? { "Last-Event-ID": lastId } : {}),
    });
    if (!response.ok) break;
  }
  view.generating(false);
  if (state.running && state.running.view === view) setRunning(null);
  addRegenerate();
  await syncBranch(chatId, messageId);
}

async function streamInto(view, method, path, body, chatId) {
  const response = await request(method, path, body, { Accept: "text/event-stream" });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    if (response.status === 409 && data.error === "reply_in_progress") {
      view.element.remove();
      await attachRunning(chatId, data.messageId);
      return;
    }
    view.fail(data.error || `http_${response.status}`, data.message || "The message could not be sent.");
    return;
  }
  await followReply(response, view, chatId);
}

async function attachRunning(chatId, messageId) {
  const shown = [...ui.messages.querySelectorAll(".message.assistant")].find(
    (element) => element.dataset.messageId === messageId,
  );
  const view = new ReplyView(shown);
  view.element.dataset.messageId = messageId;
  view.setText(""); // the stream replays the reply from its start
  const response = await request("GET", `/api/chats/${chatId}/messages/${messageId}/stream`, undefined, {
    Accept: "text/event-stream",
  });
  if (response.ok) await followReply(response, view, chatId);
}

async function sendMessage(text, attachments = []) {
  let chat = state.chat;
  if (!chat) {
    chat = await api("POST", "/api/chats", {
      modelId: ui.modelPicker.value,
      workflowId: ui.workflowPicker.value || null,
    });
    state.chat = chat;
    history.pushState({}, "", `/c/${chat.id}`);
    showChatControls(true);
  }
  removeRegenerate();
  addUserMessage(text, attachments);
  const view = new ReplyView();
  view.generating(true);
  scrollToEnd();
  const refresh = state.chat.title ? null : setTimeout(() => refreshChat(chat.id), 300);
  await streamInto(
    view,
    "POST",
    `/api/chats/${chat.id}/messages/stream`,
    {
      content: text,
      modelId: ui.modelPicker.value,
      userId: boot.userId,
      workflowId: ui.workflowPicker.value || null,
      attachments,
      parentId: shownLeaf(chat.id), // continue the branch on the page, not necessarily the newest
    },
    chat.id,
  );
  if (refresh) await refreshChat(chat.id);
}

async function refreshChat(chatId) {
  const chat = await api("GET", `/api/chats/${chatId}`);
  if (state.chat && state.chat.id === chat.id) {
    state.chat = chat;
    ui.title.textContent = chat.title || "Untitled chat";
    document.title = `${ui.title.textContent} · chatsite`;
  }
  await loadChats();
}

// --- Regenerate ------------------------------------------------------------------------------------------

function removeRegenerate() {
  document.querySelectorAll(".regenerate").forEach((button) => button.remove());
}

function addRegenerate() {
  removeRegenerate();
  const replies = ui.messages.querySelectorAll(".message.assistant");
  const last = replies[replies.length - 1];
  if (!last || !last.dataset.messageId || state.running) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link regenerate";
  button.textContent = "Regenerate";
  button.addEventListener("click", async () => {
    removeRegenerate();
    last.remove(); // the new reply takes the old one's place on the page; the old stays a sibling version
    const view = new ReplyView();
    const chatId = state.chat.id;
    await streamInto(view, "POST", `/api/chats/${chatId}/messages/${last.dataset.messageId}/regenerate`, {
      modelId: ui.modelPicker.value,
    }, chatId);
  });
  last.querySelector(".meta").append(button);
}

// --- Branches: one branch shown, sibling versions, edit (branches.js) ------------------------------------

const branch = { chatId: null, tree: null, leafId: null };

/** The last message of the branch on the page, if it is `chatId`'s: the parent of the next question. */
function shownLeaf(chatId) {
  return branch.chatId === chatId ? branch.leafId : null;
}

/** Load every message of the chat and show one branch: the one holding the message the URL's hash names
 * (a search result), else the newest. Returns the shown branch's running reply, if any. */
async function loadBranch(chatId) {
  const tree = new MessageTree(await listAll(`/api/chats/${chatId}/messages`));
  const hashed = window.location.hash.match(/^#message-([0-9a-f-]+)$/);
  const leaf = hashed && tree.has(hashed[1]) ? tree.newestUnder(hashed[1]) : tree.newest;
  Object.assign(branch, { chatId, tree });
  return renderBranch(leaf);
}

function renderBranch(leafId) {
  branch.leafId = leafId;
  const chain = branch.tree ? branch.tree.chain(leafId) : [];
  ui.messages.replaceChildren(ui.empty);
  showEmpty(chain.length === 0);
  let running = null;
  for (const message of chain) {
    renderSaved(message);
    decorateMessage(ui.messages.lastElementChild, message);
    if (message.role === "assistant" && (message.status === "queued" || message.status === "streaming")) {
      running = message;
    }
  }
  return running;
}

/** A shown message's version controls and, on a question, its Edit button. */
function decorateMessage(element, message) {
  element.id = `message-${message.id}`;
  element.dataset.messageId = message.id;
  const meta = element.querySelector(".meta");
  meta.querySelectorAll(".siblings, .edit-message").forEach((old) => old.remove());
  const nav = siblingControls(message, (siblingId) => switchBranch(siblingId));
  if (nav) meta.prepend(nav);
  if (message.role === "user") {
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "link edit-message";
    edit.textContent = "Edit";
    edit.addEventListener("click", () => {
      if (state.running) {
        announce("Wait for the reply to finish, or stop it, before editing.");
        return;
      }
      startEdit(element, message.content, {
        maxChars: boot.maxMessageChars,
        onSave: (text) => saveEdit(element, message, text),
      });
    });
    meta.append(edit);
  }
}

function switchBranch(siblingId) {
  if (state.running) {
    announce("Wait for the reply to finish, or stop it, before switching versions.");
    return;
  }
  renderBranch(branch.tree.newestUnder(siblingId));
  addRegenerate();
  const shown = document.getElementById(`message-${siblingId}`);
  if (shown) {
    shown.scrollIntoView({ block: "nearest" });
    shown.querySelector(".sibling-position")?.setAttribute("aria-live", "polite");
  }
  const ids = branch.tree.get(siblingId)?.siblingIds || [];
  announce(`Showing version ${ids.indexOf(siblingId) + 1} of ${ids.length}.`);
}

/** Save an edited question: it and everything after it leave the page for the new version and its reply. */
async function saveEdit(element, message, text) {
  if (state.running || !state.chat) return;
  if (text.length > boot.maxMessageChars) {
    announce(`Messages can be at most ${boot.maxMessageChars} characters.`);
    return;
  }
  const chatId = state.chat.id;
  while (element.nextElementSibling) element.nextElementSibling.remove();
  element.remove();
  removeRegenerate();
  addUserMessage(text, message.attachments || []);
  const view = new ReplyView();
  view.generating(true);
  scrollToEnd();
  const path = `/api/chats/${chatId}/messages/${message.id}/edit`;
  await streamInto(view, "POST", path, { content: text, modelId: ui.modelPicker.value }, chatId);
}

/** After a reply streamed: reload the tree and mark the page's messages (ids, versions) on the branch that
 * ends at `leafId`; the page is redrawn only if it does not show that branch. */
async function syncBranch(chatId, leafId) {
  let tree;
  try {
    tree = new MessageTree(await listAll(`/api/chats/${chatId}/messages`));
  } catch (error) {
    console.warn("could not reload the chat's messages", error);
    return;
  }
  if (!state.chat || state.chat.id !== chatId || state.running) return;
  Object.assign(branch, { chatId, tree });
  const leaf = leafId && tree.has(leafId) ? leafId : tree.newest;
  const chain = tree.chain(leaf);
  const shown = [...ui.messages.querySelectorAll(":scope > .message")];
  if (shown.length !== chain.length) {
    renderBranch(leaf);
    addRegenerate();
    return;
  }
  branch.leafId = leaf;
  chain.forEach((message, index) => decorateMessage(shown[index], message));
  ui.messages.dataset.branchLeaf = leaf; // the page's branch is known (tests wait for it)
}

// --- Opening, renaming, deleting chats -------------------------------------------------------------------

function showChatControls(on) {
  ui.renameButton.disabled = !on;
  ui.deleteButton.disabled = !on;
  library.showChat(on ? state.chat : null);
  share.showChat(on ? state.chat : null);
}

function newChat({ push } = {}) {
  state.chat = null;
  ui.title.textContent = "New chat";
  document.title = "chatsite";
  ui.messages.replaceChildren(ui.empty);
  showEmpty(true);
  showChatControls(false);
  if (push) history.pushState({}, "", "/");
  renderChatList();
  ui.prompt.focus();
}

async function openChat(chatId, { push } = {}) {
  let chat;
  try {
    chat = await api("GET", `/api/chats/${chatId}`);
  } catch (error) {
    if (error.status === 403 || error.status === 404) {
      window.location.assign(`/c/${chatId}`); // the server's page says why
      return;
    }
    throw error;
  }
  state.chat = chat;
  if (push) history.pushState({}, "", `/c/${chat.id}`);
  ui.title.textContent = chat.title || "Untitled chat";
  document.title = `${ui.title.textContent} · chatsite`;
  selectIfPresent(ui.modelPicker, chat.modelId);
  ui.workflowPicker.value = chat.workflowId || "";
  showChatControls(true);
  renderChatList();
  const running = await loadBranch(chat.id);
  if (!library.focusMessageFromHash()) scrollToEnd();
  if (running) await attachRunning(chat.id, running.id);
  else addRegenerate();
}

function startRename() {
  ui.renameInput.value = state.chat.title;
  ui.title.hidden = true;
  ui.renameForm.hidden = false;
  ui.renameInput.focus();
  ui.renameInput.select();
}

function endRename() {
  ui.renameForm.hidden = true;
  ui.title.hidden = false;
  ui.renameButton.focus();
}

async function saveRename(event) {
  event.preventDefault();
  const title = ui.renameInput.value.trim();
  if (title) {
    state.chat = await api("PATCH", `/api/chats/${state.chat.id}`, { title });
    ui.title.textContent = state.chat.title;
    await loadChats();
    announce("Chat renamed.");
  }
  endRename();
}

async function deleteChat() {
  if (!state.chat || !window.confirm(`Delete “${state.chat.title || "Untitled chat"}” and all its messages?`)) return;
  await api("DELETE", `/api/chats/${state.chat.id}`);
  state.chats = state.chats.filter((chat) => chat.id !== state.chat.id);
  newChat({ push: true });
  announce("Chat deleted.");
}

// --- Documents: attachments and sources ------------------------------------------------------------------

function documentHref(documentId) {
  return `/documents/${encodeURIComponent(documentId)}`;
}

/** One source under a reply: "[n] Title, p. X" linking to its passage, and its snippet. Text only. */
function sourceItem(source, index) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  // A whole attached document has the document's id as its own; a passage links to its chunk.
  const whole = !source.id || String(source.id) === String(source.documentId);
  link.href = whole
    ? documentHref(source.documentId)
    : `${documentHref(source.documentId)}#chunk-${encodeURIComponent(source.id)}`;
  const number = source.number || index + 1;
  const page = source.page ? `, p. ${source.page}` : "";
  link.textContent = `[${number}] ${source.title || "Untitled document"}${page}`;
  item.append(link);
  if (source.snippet) {
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.textContent = source.snippet;
    item.append(snippet);
  }
  return item;
}

const lookups = new Map();

/** What is known of a document (its title), asking the API once for one not seen yet. */
function lookupDocument(id) {
  if (docs.known.has(id)) return Promise.resolve(docs.known.get(id));
  if (!lookups.has(id)) {
    const found = api("GET", `/api/documents/${encodeURIComponent(id)}`)
      .then((doc) => ({ title: doc.title || doc.filename, status: doc.status }))
      .catch((error) => ({
        title: error.status === 404 ? "Deleted document" : "Unavailable document",
        missing: true,
      }))
      .then((info) => {
        docs.known.set(id, info);
        return info;
      });
    lookups.set(id, found);
  }
  return lookups.get(id);
}

/** A chip for a document attached to a past message: a link to the document's page. */
function attachmentChip(id) {
  const item = document.createElement("li");
  item.className = "chip";
  const link = document.createElement("a");
  link.href = documentHref(id);
  link.textContent = docs.known.get(id)?.title || "Document";
  item.append(link);
  lookupDocument(id).then((info) => {
    link.textContent = info.title;
    if (info.missing) link.replaceWith(Object.assign(document.createElement("span"), { textContent: info.title }));
  });
  return item;
}

function setAttached(ids) {
  docs.attached = [...new Set(ids)];
  ui.chips.replaceChildren(
    ...docs.attached.map((id) => {
      const title = docs.known.get(id)?.title || "Document";
      const item = document.createElement("li");
      item.className = "chip";
      const label = document.createElement("span");
      label.textContent = title;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chip-remove";
      remove.setAttribute("aria-label", `Remove ${title}`);
      remove.textContent = "×";
      remove.addEventListener("click", () => {
        setAttached(docs.attached.filter((other) => other !== id));
        announce(`${title} removed.`);
        (ui.chips.querySelector(".chip-remove") || ui.prompt).focus();
      });
      item.append(label, remove);
      return item;
    }),
  );
  ui.chips.hidden = docs.attached.length === 0;
  ui.attachCount.textContent = docs.attached.length ? ` (${docs.attached.length})` : "";
  for (const box of ui.attachList.querySelectorAll("input[type=checkbox]")) {
    box.checked = docs.attached.includes(box.value);
  }
}

/** The ready documents of every collection the user may read (own and shared). */
async function loadReadyDocuments() {
  const ready = await listAll("/api/documents?status=ready");
  for (const doc of ready) docs.known.set(doc.id, { title: doc.title || doc.filename, status: doc.status });
  docs.ready = ready;
}

function renderPicker() {
  const query = ui.attachFilter.value.trim().toLowerCase();
  const shown = docs.ready.filter(
    (doc) => !query || `${doc.title} ${doc.filename} ${doc.collectionName}`.toLowerCase().includes(query),
  );
  ui.attachList.replaceChildren(
    ...shown.map((doc) => {
      const item = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = doc.id;
      box.checked = docs.attached.includes(doc.id);
      box.addEventListener("change", () => {
        const title = doc.title || doc.filename;
        if (box.checked) setAttached([...docs.attached, doc.id]);
        else setAttached(docs.attached.filter((id) => id !== doc.id));
        announce(box.checked ? `${title} attached.` : `${title} removed.`);
      });
      const title = document.createElement("span");
      title.className = "attach-title";
      title.textContent = doc.title || doc.filename;
      const where = document.createElement("span");
      where.className = "attach-where";
      where.textContent = doc.collectionShared ? `${doc.collectionName} (shared)` : doc.collectionName;
      label.append(box, title, where);
      item.append(label);
      return item;
    }),
  );
  if (!docs.ready.length) ui.attachStatus.textContent = "No ready documents yet: upload some on the Documents page.";
  else if (!shown.length) ui.attachStatus.textContent = "No ready document matches.";
  else ui.attachStatus.textContent = "";
}

async function openPicker() {
  ui.attachPicker.hidden = false;
  ui.attach.setAttribute("aria-expanded", "true");
  renderPicker();
  if (!docs.ready.length) ui.attachStatus.textContent = "Loading your documents…";
  ui.attachFilter.focus();
  try {
    await loadReadyDocuments();
    if (!ui.attachPicker.hidden) renderPicker();
  } catch (error) {
    ui.attachStatus.textContent = `Your documents could not be listed: ${error.message}`;
  }
}

function closePicker({ focus = true } = {}) {
  if (ui.attachPicker.hidden) return;
  ui.attachPicker.hidden = true;
  ui.attach.setAttribute("aria-expanded", "false");
  if (focus) ui.attach.focus();
}

// --- Wiring ----------------------------------------------------------------------------------------------

ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = ui.prompt.value;
  if (!text.trim() || state.running) return;
  if (text.length > boot.maxMessageChars) {
    announce(`Messages can be at most ${boot.maxMessageChars} characters.`);
    return;
  }
  if (await compareHandles(text)) return; // Models side by side (compare.js)
  ui.prompt.value = "";
  const attachments = [...docs.attached];
  setAttached([]);
  closePicker({ focus: false });
  try {
    await sendMessage(text, attachments);
  } catch (error) {
    ui.prompt.value = text; // nothing is lost: the text and attachments go back into the composer
    setAttached(attachments);
    announce(error.message);
  }
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", async () => {
  if (!state.running || !state.running.messageId || !state.chat) return;
  ui.stop.disabled = true;
  try {
    // A compare runs several replies (compare.js): Stop ends them all.
    const ids = state.running.messageIds || [state.running.messageId];
    const results = await Promise.allSettled(
      ids.map((id) => api("POST", `/api/chats/${state.chat.id}/messages/${id}/cancel`)),
    );
    const failed = results.find((result) => result.status === "rejected" && result.reason.status !== 409);
    if (failed) announce(failed.reason.message);
  } finally {
    ui.stop.disabled = false;
  }
});

ui.newChat.addEventListener("click", () => {
  newChat({ push: true });
  setSidebar(false);
});
ui.toggle.addEventListener("click", () => setSidebar(!ui.app.classList.contains("sidebar-open")));
ui.renameButton.addEventListener("click", startRename);
ui.renameForm.addEventListener("submit", saveRename);
ui.renameCancel.addEventListener("click", endRename);
ui.renameInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape") endRename();
});
ui.deleteButton.addEventListener("click", deleteChat);
ui.modelPicker.addEventListener("change", () => {
  if (state.chat) api("PATCH", `/api/chats/${state.chat.id}`, { modelId: ui.modelPicker.value });
});
ui.workflowPicker.addEventListener("change", () => {
  if (state.chat) api("PATCH", `/api/chats/${state.chat.id}`, { workflowId: ui.workflowPicker.value || null });
});
window.addEventListener("popstate", () => {
  const match = window.location.pathname.match(/^\/c\/([^/]+)$/);
  if (match) openChat(match[1]);
  else newChat();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && ui.app.classList.contains("sidebar-open")) setSidebar(false);
});
ui.attach.addEventListener("click", () => {
  if (ui.attachPicker.hidden) openPicker();
  else closePicker();
});
ui.attachDone.addEventListener("click", () => {
  closePicker({ focus: false });
  ui.prompt.focus();
});
ui.attachFilter.addEventListener("input", renderPicker);
ui.attachFilter.addEventListener("keydown", (event) => {
  if (event.key === "Enter") event.preventDefault(); // filtering, not sending the message
});
ui.attachPicker.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.stopPropagation();
    closePicker();
  }
});
document.addEventListener("click", (event) => {
  if (!ui.attachPicker.hidden && !ui.attachPicker.contains(event.target) && !ui.attach.contains(event.target)) {
    closePicker({ focus: false });
  }
});

async function start() {
  await Promise.all([loadPickers(), loadChats()]);
  if (boot.chatId) await openChat(boot.chatId);
  else newChat();
  document.body.dataset.ready = "true";
  document.body.dataset.readyMs = String(Math.round(performance.now()));
}

start().catch((error) => announce(error.message));
