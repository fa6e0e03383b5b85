// Branches of a chat (issue 18): its messages form a tree (`parentId`); the page shows one branch, the chain of
// parents from one leaf. Edits and regenerations make siblings (`siblingIds`), shown as "< 2 / 3 >" controls that
// switch to the newest leaf under the chosen sibling; "Edit" turns a question into a textarea with Save/Cancel.
// Everything here is text and DOM built with createElement: nothing a user or a model wrote becomes markup.

/** A chat's messages (every page of GET /api/chats/<id>/messages: id, parentId, siblingIds, createdAt...). */
export class MessageTree {
  constructor(messages) {
    this.byId = new Map(messages.map((message) => [message.id, message]));
    // The API lists them oldest first (by creation time, to the microsecond): their place is their age.
    this.order = new Map(messages.map((message, index) => [message.id, index]));
    this.children = new Map();
    for (const message of messages) {
      const key = message.parentId || "";
      if (!this.children.has(key)) this.children.set(key, []);
      this.children.get(key).push(message);
    }
    // Oldest first, as the API lists them; the newest message is always a leaf (children come after parents).
    this.newest = messages.length ? messages[messages.length - 1].id : null;
  }

  has(id) {
    return this.byId.has(id);
  }

  get(id) {
    return this.byId.get(id);
  }

  /** The newest message under `id` (itself included): the leaf of the branch a switch to `id` shows. */
  newestUnder(id) {
    let best = this.byId.get(id);
    if (!best) return null;
    const stack = [id];
    while (stack.length) {
      for (const child of this.children.get(stack.pop()) || []) {
        if (this.order.get(child.id) > this.order.get(best.id)) best = child;
        stack.push(child.id);
      }
    }
    return best.id;
  }

  /** The messages from the root to `leafId`, oldest first ([] for an unknown id). */
  chain(leafId) {
    const chain = [];
    let current = this.byId.get(leafId);
    while (current && chain.length <= this.byId.size) {
      chain.push(current);
      current = current.parentId ? this.byId.get(current.parentId) : null;
    }
    return chain.reverse();
  }
}

/** "< 2 / 3 >" for a message with siblings (null without): `onSwitch(siblingId)` when an arrow is pressed. */
export function siblingControls(message, onSwitch) {
  const ids = message.siblingIds || [];
  if (ids.length < 2) return null;
  const index = ids.indexOf(message.id);
  const nav = document.createElement("span");
  nav.className = "siblings";
  nav.setAttribute("role", "group");
  nav.setAttribute("aria-label", message.role === "user" ? "Versions of this message" : "Versions of this reply");
  const button = (label, text, target) => {
    const element = document.createElement("button");
    element.type = "button";
    element.className = "link sibling-switch";
    element.setAttribute("aria-label", label);
    element.textContent = text;
    element.disabled = target === undefined;
    element.addEventListener("click", () => onSwitch(target));
    return element;
  };
  const position = document.createElement("span");
  position.className = "sibling-position";
  position.textContent = `${index + 1} / ${ids.length}`;
  nav.append(
    button("Previous version", "<", index > 0 ? ids[index - 1] : undefined),
    position,
    button("Next version", ">", index < ids.length - 1 ? ids[index + 1] : undefined),
  );
  return nav;
}

/**
 * Turn a shown question into a textarea with Save and Cancel. `onSave(text)` is called with the new text (not
 * empty, changed); Cancel (or Escape) puts the message back as it was.
 */
export function startEdit(element, text, { maxChars, onSave }) {
  if (element.querySelector("form.edit-form")) return;
  const body = element.querySelector(".body");
  const editButton = element.querySelector(".edit-message");
  const form = document.createElement("form");
  form.className = "edit-form";
  const area = document.createElement("textarea");
  area.value = text;
  area.rows = Math.min(10, Math.max(2, text.split("\n").length));
  area.maxLength = maxChars;
  area.setAttribute("aria-label", "Edit message");
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "primary";
  save.textContent = "Save";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "link";
  cancel.textContent = "Cancel";
  const end = () => {
    form.remove();
    body.hidden = false;
    if (editButton) {
      editButton.hidden = false;
      editButton.focus();
    }
  };
  cancel.addEventListener("click", end);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") end();
    else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = area.value;
    if (!value.trim() || value === text) {
      end();
      return;
    }
    onSave(value);
  });
  const buttons = document.createElement("div");
  buttons.className = "edit-buttons";
  buttons.append(save, cancel);
  form.append(area, buttons);
  body.hidden = true;
  if (editButton) editButton.hidden = true;
  body.after(form);
  area.focus();
}
