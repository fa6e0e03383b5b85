// Models side by side (issue 18): one question answered by 2 to 4 models (or workflows) at once.
// The composer's "Compare" control opens a panel of 2 to 4 rows (a model and an optional workflow each). With it
// open, the composer's send posts to /api/chats/<id>/messages/compare, which saves the question and one queued
// reply per row (siblings) and answers with their ids; each reply is then followed on its own resume stream
// (GET .../messages/<id>/stream), in columns (side by side on wide screens, stacked on phones). Once they end,
// each column has "Continue with this": the conversation goes on from that reply, the others stay as versions.
// Everything here is text and DOM built with createElement: nothing a user or a model wrote becomes markup.

import { api, request } from "./api.js";
import { readEvents } from "./sse.js";
import { renderMarkdown } from "./markdown.js";

const MIN_TARGETS = 2;
const MAX_TARGETS = 4;
const RESUME_ATTEMPTS = 5;

/**
 * Wire the Compare control. `hooks` is what the chat page lends it:
 * - ensureChat(): Promise<chat> — the open chat, created first if there is none;
 * - addUserMessage(text) — show the question on the page;
 * - shownLeaf(chatId) — the parent of the next question (the shown branch's last message);
 * - setRunning(running|null) — block sends and version switches while the replies run;
 * - continueFrom(chatId, replyId): Promise — show the branch ending at the picked reply;
 * - announce(text), scrollToEnd(), userId.
 * Returns {isOpen(), awaitingPick(chatId), submit(text): Promise, reset()}.
 */
export function setupCompare(hooks) {
  const toggle = document.getElementById("compare-toggle");
  const panel = document.getElementById("compare-panel");
  const rows = document.getElementById("compare-rows");
  const add = document.getElementById("compare-add");
  const messages = document.getElementById("messages");
  let models = [];
  let workflows = [];
  let pending = null; // {chatId, columns} while replies wait for the user's pick

  async function loadChoices() {
    const [m, w] = await Promise.all([api("GET", "/api/models"), api("GET", "/api/workflows")]);
    models = m.results;
    workflows = w.results.filter((workflow) => workflow.isActive);
  }

  function select(label, options) {
    const element = document.createElement("select");
    element.setAttribute("aria-label", label);
    element.replaceChildren(...options);
    return element;
  }

  function addRow() {
    const index = rows.children.length;
    if (index >= MAX_TARGETS) return;
    const row = document.createElement("li");
    row.className = "compare-row";
    const model = select(`Model ${index + 1}`, models.map((m) => new Option(m.name, m.id)));
    // A different model per row by default: comparing a model with itself is the rarer wish.
    if (models.length) model.selectedIndex = Math.min(index, models.length - 1);
    model.className = "compare-model";
    const workflow = select(`Workflow ${index + 1}`, [
      new Option("No workflow", ""),
      ...workflows.map((w) => new Option(w.shared ? `${w.name} (shared)` : w.name, w.id)),
    ]);
    workflow.className = "compare-workflow";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link compare-remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove model ${index + 1}`);
    remove.addEventListener("click", () => {
      row.remove();
      refreshRows();
    });
    row.append(model, workflow, remove);
    rows.append(row);
    refreshRows();
  }

  function refreshRows() {
    const count = rows.children.length;
    add.disabled = count >= MAX_TARGETS;
    for (const button of rows.querySelectorAll(".compare-remove")) button.hidden = count <= MIN_TARGETS;
  }

  function targets() {
    return [...rows.children].map((row) => {
      const target = { modelId: row.querySelector(".compare-model").value };
      const workflowId = row.querySelector(".compare-workflow").value;
      if (workflowId) target.workflowId = workflowId;
      return target;
    });
  }

  function label(target) {
    const model = models.find((m) => m.id === target.modelId);
    const workflow = workflows.find((w) => w.id === target.workflowId);
    return (model ? model.name : target.modelId) + (workflow ? ` · ${workflow.name}` : "");
  }

  async function open() {
    try {
      if (!models.length) await loadChoices();
    } catch (error) {
      hooks.announce(error.message);
      return;
    }
    if (!rows.children.length) for (let i = 0; i < MIN_TARGETS; i += 1) addRow();
    panel.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
    toggle.classList.add("active");
    hooks.announce("Compare is on: your next message goes to every model listed.");
  }

  function close() {
    panel.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
    toggle.classList.remove("active");
  }

  toggle.addEventListener("click", () => (panel.hidden ? open() : close()));
  add.addEventListener("click", addRow);

  /** One column: a reply followed on its resume stream until `end` or `error`. */
  function column(container, reply, target) {
    const element = document.createElement("article");
    element.className = "message assistant compare-column generating";
    element.dataset.messageId = reply.messageId;
    const who = document.createElement("div");
    who.className = "who-said";
    who.textContent = label(target);
    const body = document.createElement("div");
    body.className = "body";
    const meta = document.createElement("div");
    meta.className = "meta";
    const status = document.createElement("span");
    status.className = "generating-label";
    status.textContent = "Waiting…"; // until its first words: it may wait for a free worker
    meta.append(status);
    element.append(who, body, meta);
    container.append(element);
    let text = "";
    let frame = false;
    const show = () => {
      if (frame) return;
      frame = true;
      requestAnimationFrame(() => {
        frame = false;
        renderMarkdown(body, text);
      });
    };
    const done = (async () => {
      let lastId = null;
      for (let attempt = 0; attempt <= RESUME_ATTEMPTS; attempt += 1) {
        const headers = { Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": lastId } : {}) };
        let response;
        try {
          response = await request("GET", `/api/chats/${pending.chatId}/messages/${reply.messageId}/stream`, undefined, headers);
        } catch (error) {
          response = null;
        }
        if (response && response.ok) {
          try {
            for await (const event of readEvents(response)) {
              if (event.id) lastId = event.id;
              const data = JSON.parse(event.data);
              if (data.type === "queued") {
                status.textContent = "Waiting for a free worker…";
              } else if (data.type === "content") {
                status.textContent = "Generating…";
                text += data.delta;
                show();
              } else if (data.type === "end") {
                renderMarkdown(body, text);
                element.classList.remove("generating");
                element.dataset.status = "completed";
                if (data.finishReason === "cancelled") {
                  const stopped = document.createElement("span");
                  stopped.className = "usage";
                  stopped.textContent = "Stopped";
                  meta.append(stopped);
                }
                return;
              } else if (data.type === "error") {
                renderMarkdown(body, text);
                element.classList.remove("generating");
                const error = document.createElement("div");
                error.className = "error";
                error.setAttribute("role", "alert");
                error.textContent = `${data.message} (${data.error})`;
                body.after(error);
                element.dataset.status = "failed";
                return;
              }
            }
          } catch (error) {
            console.warn("compare stream interrupted", error);
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
      }
      element.classList.remove("generating");
      const lost = document.createElement("span");
      lost.textContent = "The stream was lost; reload the chat to see this reply.";
      meta.append(lost);
    })();
    return { element, meta, reply, done };
  }

  async function submit(text) {
    const chat = await hooks.ensureChat();
    const chosen = targets();
    const parentId = hooks.shownLeaf(chat.id);
    hooks.addUserMessage(text);
    const body = { content: text, userId: hooks.userId, targets: chosen, ...(parentId ? { parentId } : {}) };
    const answer = await api("POST", `/api/chats/${chat.id}/messages/compare`, body);
    const container = document.createElement("div");
    container.className = "compare-columns";
    container.setAttribute("role", "group");
    container.setAttribute("aria-label", "Replies side by side");
    messages.append(container);
    hooks.scrollToEnd();
    pending = { chatId: chat.id, columns: [] };
    const messageIds = answer.replies.map((reply) => reply.messageId);
    hooks.setRunning({ messageId: messageIds[0], messageIds, view: null });
    pending.columns = answer.replies.map((reply, index) => column(container, reply, chosen[index]));
    close();
    await Promise.all(pending.columns.map((c) => c.done));
    hooks.setRunning(null);
    hooks.announce("The replies are complete. Pick one to continue with.");
    for (const c of pending.columns) {
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "primary continue-with";
      pick.textContent = "Continue with this";
      pick.addEventListener("click", () => {
        const chatId = pending.chatId;
        pending = null;
        hooks.continueFrom(chatId, c.reply.messageId);
      });
      c.meta.append(pick);
    }
    container.dataset.complete = "true";
  }

  return {
    isOpen: () => !panel.hidden,
    awaitingPick: (chatId) => pending !== null && pending.chatId === chatId,
    submit,
    reset() {
      pending = null;
      close();
    },
  };
}
