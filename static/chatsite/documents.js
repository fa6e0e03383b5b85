// The documents page: the user's collections (own and shared), one collection's documents with their
// ingestion status, uploads (file input or drag and drop), deletes. Everything through the JSON API; document
// data only ever goes into the page as text (textContent, attributes), never as markup.

import { api, listAll } from "./api.js";

const boot = JSON.parse(document.getElementById("boot").textContent);
const $ = (id) => document.getElementById(id);
const ui = {
  collectionList: $("collection-list"),
  noCollections: $("no-collections"),
  newCollection: $("new-collection"),
  collectionName: $("collection-name"),
  collectionDescription: $("collection-description"),
  noSelection: $("no-selection"),
  view: $("collection-view"),
  title: $("collection-title"),
  shared: $("collection-shared"),
  description: $("collection-description-text"),
  deleteCollection: $("delete-collection"),
  upload: $("upload"),
  files: $("upload-files"),
  dropzone: $("dropzone"),
  maxSize: $("max-size"),
  readOnly: $("read-only-note"),
  uploadLog: $("upload-log"),
  rows: $("document-rows"),
  table: $("documents-table"),
  noDocuments: $("no-documents"),
  announce: $("announce"),
};

const POLL_MS = 2000;
const BUSY = new Set(["queued", "processing"]);
const STATUS_LABELS = { queued: "Queued", processing: "Processing", ready: "Ready", failed: "Failed" };
const state = { collections: [], collection: null, documents: [], poll: null, generation: 0 };

// --- API -------------------------------------------------------------------------------------------------

/** The first reason in an API error body: its message, else the first field error. */
function reason(error) {
  const fields = error.body && error.body.fields;
  if (fields) {
    const first = Object.values(fields).flat()[0];
    if (first) return String(first);
  }
  return error.message;
}

function announce(text) {
  ui.announce.textContent = text;
}

function formatSize(bytes) {
  if (bytes == null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function canWrite(collection) {
  return !collection.shared || boot.isStaff;
}

// --- Collections -----------------------------------------------------------------------------------------

async function loadCollections() {
  state.collections = await listAll("/api/collections");
  renderCollections();
}

function renderCollections() {
  ui.noCollections.hidden = state.collections.length > 0;
  ui.collectionList.replaceChildren(
    ...state.collections.map((collection) => {
      const item = element("li");
      const link = element("a");
      link.href = `/documents?collection=${encodeURIComponent(collection.id)}`;
      link.dataset.collectionId = collection.id;
      link.append(element("span", "name", collection.name));
      if (collection.shared) link.append(element("span", "badge", "shared"));
      link.append(element("span", "count", `${collection.documentCount}`));
      link.title = `${collection.name}: ${collection.documentCount} document${collection.documentCount === 1 ? "" : "s"}`;
      if (state.collection && state.collection.id === collection.id) link.setAttribute("aria-current", "page");
      link.addEventListener("click", (event) => {
        event.preventDefault();
        selectCollection(collection.id, { push: true });
      });
      item.append(link);
      return item;
    }),
  );
}

async function createCollection(event) {
  event.preventDefault();
  const name = ui.collectionName.value.trim();
  if (!name) return;
  try {
    const collection = await api("POST", "/api/collections", {
      name,
      description: ui.collectionDescription.value.trim(),
    });
    ui.collectionName.value = "";
    ui.collectionDescription.value = "";
    await loadCollections();
    await selectCollection(collection.id, { push: true });
    announce(`Collection “${collection.name}” created.`);
    ui.files.focus();
  } catch (error) {
    announce(`The collection was not created: ${reason(error)}`);
  }
}

async function deleteCollection() {
  const collection = state.collection;
  if (!collection) return;
  const count = state.documents.length;
  const what = count ? ` and its ${count} document${count === 1 ? "" : "s"}` : "";
  if (!window.confirm(`Delete the collection “${collection.name}”${what}?`)) return;
  try {
    await api("DELETE", `/api/collections/${collection.id}`);
  } catch (error) {
    announce(`The collection was not deleted: ${reason(error)}`);
    return;
  }
  state.collection = null;
  await loadCollections();
  showCollection(null);
  history.pushState({}, "", "/documents");
  announce(`Collection “${collection.name}” deleted.`);
}

// --- One collection's documents --------------------------------------------------------------------------

function showCollection(collection) {
  state.collection = collection;
  ui.noSelection.hidden = Boolean(collection);
  ui.view.hidden = !collection;
  stopPolling();
  if (!collection) {
    state.documents = [];
    renderCollections();
    return;
  }
  ui.title.textContent = collection.name;
  ui.shared.hidden = !collection.shared;
  ui.description.textContent = collection.description || "";
  ui.description.hidden = !collection.description;
  ui.deleteCollection.hidden = !canWrite(collection);
  ui.upload.hidden = !canWrite(collection);
  ui.readOnly.hidden = canWrite(collection);
  ui.uploadLog.replaceChildren();
  document.title = `${collection.name} · Documents · chatsite`;
  renderCollections();
}

async function selectCollection(collectionId, { push } = {}) {
  const collection = state.collections.find((c) => c.id === collectionId);
  if (!collection) {
    showCollection(null);
    return;
  }
  if (push) history.pushState({}, "", `/documents?collection=${encodeURIComponent(collection.id)}`);
  showCollection(collection);
  state.documents = [];
  renderDocuments();
  await loadDocuments();
}

async function loadDocuments() {
  const collection = state.collection;
  if (!collection) return;
  const generation = ++state.generation;
  const documents = await listAll(`/api/collections/${collection.id}/documents`);
  if (generation !== state.generation || state.collection !== collection) return; // another one was picked
  const before = new Map(state.documents.map((d) => [d.id, d.status]));
  state.documents = documents;
  renderDocuments();
  for (const doc of documents) {
    const was = before.get(doc.id);
    if (was && was !== doc.status && !BUSY.has(doc.status)) {
      announce(doc.status === "ready" ? `“${doc.title}” is ready.` : `“${doc.title}” failed: ${doc.error}`);
    }
  }
  if (collection.documentCount !== documents.length) {
    collection.documentCount = documents.length;
    renderCollections();
  }
  schedulePoll();
}

function statusCell(doc) {
  const cell = element("td", "status-cell");
  const badge = element("span", `status status-${doc.status}`, STATUS_LABELS[doc.status] || doc.status);
  cell.append(badge);
  if (doc.status === "failed" && doc.error) cell.append(element("div", "doc-error", doc.error));
  return cell;
}

function documentRow(doc) {
  const row = element("tr");
  row.dataset.documentId = doc.id;
  row.dataset.status = doc.status;
  const titleCell = element("td", "title-cell");
  const link = element("a", null, doc.title || doc.filename);
  link.href = `/documents/${doc.id}`;
  titleCell.append(link);
  if (doc.filename && doc.filename !== doc.title) {
    titleCell.append(element("div", "muted filename", doc.filename));
  }
  const actions = element("td", "actions-cell");
  if (canWrite(state.collection)) {
    const remove = element("button", "link", "Delete");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete ${doc.title || doc.filename}`);
    remove.addEventListener("click", () => deleteDocument(doc));
    actions.append(remove);
  }
  row.append(
    titleCell,
    statusCell(doc),
    element("td", "num", formatSize(doc.sizeBytes)),
    element("td", "num", doc.pageCount == null ? "–" : String(doc.pageCount)),
    element("td", "num", doc.status === "ready" ? String(doc.chunkCount) : "–"),
    actions,
  );
  return row;
}

function renderDocuments() {
  ui.rows.replaceChildren(...state.documents.map(documentRow));
  ui.table.hidden = state.documents.length === 0;
  ui.noDocuments.hidden = state.documents.length > 0;
}

async function deleteDocument(doc) {
  if (!window.confirm(`Delete “${doc.title || doc.filename}”?`)) return;
  try {
    await api("DELETE", `/api/documents/${doc.id}`);
  } catch (error) {
    announce(`The document was not deleted: ${reason(error)}`);
    return;
  }
  announce(`“${doc.title || doc.filename}” deleted.`);
  await loadDocuments();
}

// --- Polling while documents are being read ----------------------------------------------------------------

function stopPolling() {
  if (state.poll) clearTimeout(state.poll);
  state.poll = null;
}

function schedulePoll() {
  stopPolling();
  if (!state.documents.some((d) => BUSY.has(d.status))) return;
  state.poll = setTimeout(async () => {
    state.poll = null;
    try {
      await loadDocuments();
    } catch (error) {
      announce(error.message);
      schedulePoll();
    }
  }, POLL_MS);
}

// --- Uploads ---------------------------------------------------------------------------------------------

function logUpload(text, kind = "") {
  const item = element("li", kind, text);
  ui.uploadLog.prepend(item);
  return item;
}

async function uploadFiles(files) {
  const collection = state.collection;
  if (!collection || !canWrite(collection) || files.length === 0) return;
  ui.files.disabled = true;
  let done = 0;
  for (const file of files) {
    const line = logUpload(`Uploading ${file.name}…`);
    if (file.size > boot.maxUploadBytes) {
      line.textContent = `${file.name}: too large (${formatSize(file.size)}; files of up to ${formatSize(boot.maxUploadBytes)} are taken).`;
      line.className = "failed";
      continue;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const doc = await api("POST", `/api/collections/${collection.id}/documents`, form);
      const known = state.collection === collection && state.documents.some((d) => d.id === doc.id);
      line.textContent = known
        ? `${file.name}: already in this collection as “${doc.title}”.`
        : `${file.name}: uploaded, ${(STATUS_LABELS[doc.status] || doc.status).toLowerCase()}.`;
      line.className = "ok";
      done += 1;
    } catch (error) {
      line.textContent = `${file.name}: not uploaded. ${reason(error)}`;
      line.className = "failed";
    }
  }
  ui.files.disabled = false;
  ui.files.value = "";
  announce(`${done} of ${files.length} file${files.length === 1 ? "" : "s"} uploaded.`);
  if (state.collection === collection) await loadDocuments();
}

// --- Wiring ----------------------------------------------------------------------------------------------

ui.newCollection.addEventListener("submit", createCollection);
ui.deleteCollection.addEventListener("click", deleteCollection);
ui.upload.addEventListener("submit", (event) => {
  event.preventDefault();
  if (ui.files.files.length === 0) {
    announce("Choose one or more files first.");
    ui.files.focus();
    return;
  }
  uploadFiles([...ui.files.files]);
});
for (const name of ["dragenter", "dragover"]) {
  ui.dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    ui.dropzone.classList.add("dragging");
  });
}
for (const name of ["dragleave", "drop"]) {
  ui.dropzone.addEventListener(name, () => ui.dropzone.classList.remove("dragging"));
}
ui.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  uploadFiles([...event.dataTransfer.files]);
});
window.addEventListener("popstate", () => {
  const id = new URLSearchParams(window.location.search).get("collection");
  if (id) selectCollection(id);
  else showCollection(null);
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.collection) loadDocuments().catch((error) => announce(error.message));
});

async function start() {
  ui.maxSize.textContent = formatSize(boot.maxUploadBytes);
  await loadCollections();
  const wanted = new URLSearchParams(window.location.search).get("collection");
  const first = state.collections.find((c) => !c.shared) || state.collections[0];
  const chosen = state.collections.find((c) => c.id === wanted) || first;
  if (chosen) await selectCollection(chosen.id, { push: false });
  else showCollection(null);
  document.body.dataset.ready = "true";
}

start().catch((error) => announce(error.message));
