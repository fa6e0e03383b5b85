// Share links on the chat page (issue 18): the "Share" button opens a dialog to make a read-only link to the
// open chat (its URL is shown once, with a copy button), and to list and revoke the chat's links. Wired from
// app.js through `setupShare`; talks to /api/chats/<chatId>/shares.
import { api, listAll } from "./api.js";

const $ = (id) => document.getElementById(id);

const EXPIRY_CHOICES = { never: null, hour: 3600, day: 86400, week: 7 * 86400 };

/**
 * @param {{getChat: () => ({id: string}|null), announce: (text: string) => void}} app
 * @returns {{showChat: (chat: object|null) => void}}
 */
export function setupShare(app) {
  const ui = {
    button: $("share-chat"),
    dialog: $("share-dialog"),
    form: $("share-form"),
    audience: $("share-audience"),
    expiry: $("share-expiry"),
    created: $("share-created"),
    url: $("share-url"),
    copy: $("share-copy"),
    list: $("share-list"),
    status: $("share-status"),
    close: $("share-close"),
  };

  function chatPath() {
    const chat = app.getChat();
    return chat ? `/api/chats/${chat.id}/shares` : null;
  }

  function describe(share) {
    const who = share.audience === "logged_in" ? "Logged-in users" : "Anyone with the link";
    const until = share.expiresAt ? `until ${new Date(share.expiresAt).toLocaleString()}` : "no expiry";
    return `${who}, ${until} (made ${new Date(share.createdAt).toLocaleString()})`;
  }

  async function refresh() {
    const path = chatPath();
    if (!path) return;
    let shares;
    try {
      shares = await listAll(path);
    } catch (error) {
      ui.status.textContent = error.message;
      return;
    }
    ui.list.replaceChildren(
      ...shares.map((share) => {
        const item = document.createElement("li");
        item.dataset.shareId = share.id;
        const label = document.createElement("span");
        label.textContent = describe(share);
        const revoke = document.createElement("button");
        revoke.type = "button";
        revoke.className = "small danger";
        revoke.textContent = "Revoke";
        revoke.addEventListener("click", () => revokeShare(share.id));
        item.append(label, revoke);
        return item;
      }),
    );
    ui.status.textContent = shares.length ? "" : "No links yet.";
  }

  async function revokeShare(shareId) {
    try {
      await api("DELETE", `${chatPath()}/${shareId}`);
      app.announce("The link was revoked: it no longer opens the chat.");
      ui.created.hidden = true;
    } catch (error) {
      ui.status.textContent = error.message;
    }
    await refresh();
  }

  function open(on) {
    ui.dialog.hidden = !on;
    ui.button.setAttribute("aria-expanded", String(on));
    if (on) {
      ui.created.hidden = true;
      ui.url.value = "";
      refresh();
      ui.audience.focus();
    } else {
      ui.button.focus();
    }
  }

  ui.button.addEventListener("click", () => open(ui.dialog.hidden));
  ui.close.addEventListener("click", () => open(false));
  ui.dialog.addEventListener("keydown", (event) => {
    if (event.key === "Escape") open(false);
  });

  ui.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { audience: ui.audience.value };
    const seconds = EXPIRY_CHOICES[ui.expiry.value];
    if (seconds) body.expiresInSeconds = seconds;
    try {
      const share = await api("POST", chatPath(), body);
      ui.url.value = share.url;
      ui.created.hidden = false;
      ui.url.select();
      app.announce("Link made. Copy it now: it is shown only once.");
    } catch (error) {
      ui.status.textContent = error.message;
    }
    await refresh();
  });

  ui.copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(ui.url.value);
      ui.copy.textContent = "Copied";
    } catch {
      ui.url.select(); // no clipboard permission: leave it selected for Ctrl+C
    }
    setTimeout(() => (ui.copy.textContent = "Copy"), 1500);
  });

  return {
    showChat(chat) {
      ui.button.hidden = !chat;
      if (!chat) ui.dialog.hidden = true;
    },
  };
}
