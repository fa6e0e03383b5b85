// The chat library in the sidebar and the chat's header: search across chats, pinned and archived chats,
// export (links the browser downloads) and import (with the server's report shown). Everything through the JSON
// API; search snippets are built as text nodes and <mark> elements from the server's offsets, never as HTML.
import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
const SEARCH_DELAY_MS = 250;
const REPORT_LINES = 100;

/**
 * Wire the library controls. `app` gives what the chat page owns: openChat(chatId), reloadChats(), getChat(),
 * setChat(chat), announce(text), closeSidebar().
 */
export function setupLibrary(app) {
  const ui = {
    form: $("search-form"),
    input: $("search-input"),
    results: $("search-results"),
    status: $("search-status"),
    list: $("search-list"),
    nav: $("chat-nav"),
    heading: $("list-heading"),
    archivedToggle: $("show-archived"),
    importButton: $("import-chats"),
    importFile: $("import-file"),
    report: $("import-report"),
    summary: $("import-summary"),
    skipped: $("import-skipped"),
    reportClose: $("import-close"),
    pin: $("pin-chat"),
    archive: $("archive-chat"),
    exportMenu: $("export-menu"),
    exportJson: $("export-json"),
    exportMarkdown: $("export-markdown"),
  };
  const state = { archived: false, timer: null, searchSeq: 0 };

  // --- Search --------------------------------------------------------------------------------------------

  function showResults(on) {
    ui.results.hidden = !on;
    ui.nav.hidden = on;
    ui.heading.hidden = on || !state.archived;
  }

  /** `text` with its [start, end) UTF-16 ranges wrapped in <mark>: text nodes only, whatever the text holds. */
  function highlighted(text, ranges) {
    const parts = [];
    let at = 0;
    for (const [start, end] of [...ranges].sort((a, b) => a[0] - b[0])) {
      if (start < at || end > text.length || end <= start) continue;
      if (start > at) parts.push(document.createTextNode(text.slice(at, start)));
      const mark = document.createElement("mark");
      mark.textContent = text.slice(start, end);
      parts.push(mark);
      at = end;
    }
    if (at < text.length) parts.push(document.createTextNode(text.slice(at)));
    return parts;
  }

  function resultItem(result) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = result.url;
    link.dataset.chatId = result.chatId;
    if (result.messageId) link.dataset.messageId = result.messageId;
    const title = document.createElement("span");
    title.className = "result-title";
    title.textContent = result.chatTitle || "Untitled chat";
    const where = document.createElement("span");
    where.className = "result-where";
    const what = !result.messageId ? "In the title" : result.role === "user" ? "You wrote" : "Reply";
    const when = new Date(result.createdAt).toLocaleDateString();
    where.textContent = `${what} · ${when}${result.archived ? " · archived" : ""}`;
    const snippet = document.createElement("span");
    snippet.className = "result-snippet";
    snippet.append(...highlighted(result.snippet, result.highlights));
    link.append(title, where, snippet);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      openResult(result);
    });
    item.append(link);
    return item;
  }

  async function openResult(result) {
    history.pushState({}, "", result.url);
    app.closeSidebar();
    await app.openChat(result.chatId); // scrolls to the message named in the URL's #message-<id>
  }

  async function runSearch() {
    const query = ui.input.value.trim();
    clearTimeout(state.timer);
    if (!query) {
      showResults(false);
      ui.list.replaceChildren();
      ui.status.textContent = "";
      return;
    }
    const seq = ++state.searchSeq;
    showResults(true);
    ui.status.textContent = "Searching…";
    try {
      const page = await api("GET", `/api/search?q=${encodeURIComponent(query)}`);
      if (seq !== state.searchSeq) return; // a newer search is under way
      ui.list.replaceChildren(...page.results.map(resultItem));
      const more = page.count > page.results.length ? ` (the best ${page.results.length} shown)` : "";
      ui.status.textContent = page.count
        ? `${page.count} match${page.count === 1 ? "" : "es"}${more}`
        : `Nothing matches “${query}”.`;
    } catch (error) {
      if (seq !== state.searchSeq) return;
      ui.list.replaceChildren();
      ui.status.textContent = error.message;
    }
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  ui.input.addEventListener("input", () => {
    clearTimeout(state.timer);
    state.timer = setTimeout(runSearch, SEARCH_DELAY_MS);
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.input.value) {
      event.stopPropagation();
      ui.input.value = "";
      runSearch();
    }
  });

  /** Scroll to and mark the message named by the URL's `#message-<id>`, if it is shown. */
  function focusMessageFromHash() {
    const match = window.location.hash.match(/^#message-([0-9a-f-]+)$/);
    if (!match) return false;
    const element = document.getElementById(`message-${match[1]}`);
    if (!element) return false;
    document.querySelectorAll(".message.search-hit").forEach((other) => other.classList.remove("search-hit"));
    element.classList.add("search-hit");
    element.setAttribute("tabindex", "-1");
    element.scrollIntoView({ block: "center" });
    element.focus({ preventScroll: true });
    return true;
  }

  // --- Pins, archive, export -----------------------------------------------------------------------------

  function showChat(chat) {
    for (const control of [ui.pin, ui.archive, ui.exportMenu]) control.hidden = !chat;
    ui.exportMenu.open = false;
    if (!chat) return;
    ui.pin.textContent = chat.pinned ? "Unpin" : "Pin";
    ui.pin.setAttribute("aria-pressed", String(Boolean(chat.pinned)));
    ui.archive.textContent = chat.archived ? "Unarchive" : "Archive";
    ui.archive.setAttribute("aria-pressed", String(Boolean(chat.archived)));
    const base = `/api/chats/${encodeURIComponent(chat.id)}/export`;
    ui.exportJson.href = `${base}?format=json`;
    ui.exportMarkdown.href = `${base}?format=markdown`;
  }

  async function toggle(field, done) {
    const chat = app.getChat();
    if (!chat) return;
    try {
      const updated = await api("PATCH", `/api/chats/${chat.id}`, { [field]: !chat[field] });
      app.setChat(updated);
      showChat(updated);
      await app.reloadChats();
      app.announce(done(updated));
    } catch (error) {
      app.announce(error.message);
    }
  }

  ui.pin.addEventListener("click", () => toggle("pinned", (chat) => (chat.pinned ? "Chat pinned." : "Chat unpinned.")));
  ui.archive.addEventListener("click", () =>
    toggle("archived", (chat) => (chat.archived ? "Chat archived." : "Chat back in your chats.")),
  );
  ui.exportMenu.addEventListener("click", (event) => {
    if (event.target.closest("a")) ui.exportMenu.open = false;
  });
  document.addEventListener("click", (event) => {
    if (ui.exportMenu.open && !ui.exportMenu.contains(event.target)) ui.exportMenu.open = false;
  });

  ui.archivedToggle.addEventListener("click", async () => {
    state.archived = !state.archived;
    ui.archivedToggle.setAttribute("aria-pressed", String(state.archived));
    ui.heading.hidden = !state.archived || !ui.results.hidden;
    await app.reloadChats();
  });

  /** Each chat in the list: a marker on pinned ones. */
  function decorateChatLink(link, chat) {
    if (!chat.pinned) return;
    const pin = document.createElement("span");
    pin.className = "pin";
    pin.textContent = "Pinned";
    link.prepend(pin);
  }

  // --- Import --------------------------------------------------------------------------------------------

  function showReport(summary, skipped = []) {
    ui.summary.textContent = summary;
    const lines = skipped.slice(0, REPORT_LINES).map((entry) => {
      const item = document.createElement("li");
      item.textContent = `${entry.title || `Chat ${entry.index + 1}`}: ${entry.reason}`;
      return item;
    });
    if (skipped.length > REPORT_LINES) {
      const more = document.createElement("li");
      more.textContent = `… and ${skipped.length - REPORT_LINES} more.`;
      lines.push(more);
    }
    ui.skipped.replaceChildren(...lines);
    ui.report.hidden = false;
    ui.reportClose.focus();
  }

  ui.importButton.addEventListener("click", () => ui.importFile.click());
  ui.importFile.addEventListener("change", async () => {
    const file = ui.importFile.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    ui.importButton.disabled = true;
    app.announce(`Importing ${file.name}…`);
    try {
      const report = await api("POST", "/api/chats/import", form);
      const chats = report.imported.length;
      const messages = report.imported.reduce((sum, chat) => sum + chat.messages, 0);
      const from = { chatsite: "a chatsite export", chatgpt: "ChatGPT", "open-webui": "Open WebUI" }[report.format];
      const counts = `${chats} chat${chats === 1 ? "" : "s"} (${messages} message${messages === 1 ? "" : "s"})`;
      let summary = `Imported ${counts} from ${from}.`;
      if (report.skipped.length) summary += ` Left out, and why:`;
      showReport(summary, report.skipped);
      await app.reloadChats();
    } catch (error) {
      showReport(`Nothing was imported: ${error.message}`);
    } finally {
      ui.importButton.disabled = false;
      ui.importFile.value = "";
    }
  });
  function closeReport() {
    ui.report.hidden = true;
    ui.importButton.focus();
  }
  ui.reportClose.addEventListener("click", closeReport);
  ui.report.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      closeReport();
    }
  });

  return {
    /** The chat list's API path: the archived chats when that filter is on. */
    chatListPath: () => (state.archived ? "/api/chats?archived=true" : "/api/chats"),
    decorateChatLink,
    showChat,
    focusMessageFromHash,
  };
}
