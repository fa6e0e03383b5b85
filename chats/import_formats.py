"""Readers of the three import formats (see `chats.importers` for their shapes): each turns one chat of a file
into an `ImportedChat`, noting what it leaves out and why."""

from __future__ import annotations

from typing import Any

from chats.import_data import (
    ImportedChat,
    ImportedMessage,
    clean_text,
    epoch_time,
    iso_time,
    nearest_kept,
    short_text,
    source_records,
    title_text,
    token_count,
    tool_call_records,
)
from chats.models import Message

ROLES = set(Message.Role.values)


# --- chatsite --------------------------------------------------------------------------------------------


def read_chatsite_chat(index: int, item: dict) -> ImportedChat:
    """One chat of chatsite's own export (`chats.export`): every message, its tree, tool calls and sources."""
    chat = ImportedChat(
        index,
        title_text(item.get("title")),
        pinned=item.get("pinned") is True,
        archived=item.get("archived") is True,
        model_id=short_text(item.get("modelId"), 100),
        created_at=iso_time(item.get("createdAt")),
        updated_at=iso_time(item.get("updatedAt")),
    )
    rows = item.get("messages")
    if not isinstance(rows, list):
        chat.problem = "This chat has no list of messages."
        return chat
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            chat.notes.append((None, f"Entry {position} of the messages is not a message; left out."))
            continue
        key = str(row.get("id") or f"#{position}")
        role, content = row.get("role"), row.get("content")
        if role not in ROLES:
            chat.notes.append((key, f"Unknown role {str(role)[:20]!r}; left out."))
            continue
        if not isinstance(content, str):
            chat.notes.append((key, "The content is not text; left out."))
            continue
        usage = row.get("usage") if isinstance(row.get("usage"), dict) else {}
        if row.get("attachments"):
            chat.notes.append((key, "Attached documents left out (their ids belong to the exporting server)."))
        parent = row.get("parentId")
        chat.messages.append(
            ImportedMessage(
                key=key,
                parent_key=str(parent) if parent is not None else None,
                role=role,
                content=clean_text(content),
                model_id=short_text(row.get("modelId"), 100),
                finish_reason=short_text(row.get("finishReason"), 32),
                prompt_tokens=token_count(usage.get("promptTokens")),
                completion_tokens=token_count(usage.get("completionTokens")),
                tool_calls=tool_call_records(row.get("toolCalls")),
                sources=source_records(row.get("sources")),
                created_at=iso_time(row.get("createdAt")),
                completed_at=iso_time(row.get("completedAt")),
            )
        )
    return chat


# --- ChatGPT ---------------------------------------------------------------------------------------------

CHATGPT_FINISH = {"stop": "stop", "max_tokens": "length", "interrupted": "cancelled"}


def read_chatgpt_chat(index: int, item: dict) -> ImportedChat:
    """One ChatGPT conversation: user and assistant text, kept in its tree; the rest is noted as left out."""
    chat = ImportedChat(
        index,
        title_text(item.get("title")),
        archived=item.get("is_archived") is True,
        model_id=short_text(item.get("default_model_slug"), 100),
        created_at=epoch_time(item.get("create_time")),
        updated_at=epoch_time(item.get("update_time")),
    )
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        chat.problem = "This conversation has no message mapping."
        return chat
    kept: dict[str, ImportedMessage] = {}
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            chat.notes.append((str(node_id), "Not a message node; left out."))
            continue
        if node.get("message") is None:
            continue  # the conversation's empty root
        message, reason = _chatgpt_message(str(node_id), node["message"])
        if message is None:
            chat.notes.append((str(node_id), reason))
            continue
        if reason:
            chat.notes.append((str(node_id), reason))
        kept[str(node_id)] = message
    for node_id, message in kept.items():
        message.parent_key = nearest_kept(mapping, mapping[node_id].get("parent"), kept, "parent")
    chat.messages = list(kept.values())
    return chat


def _chatgpt_message(node_id: str, message: Any) -> tuple[ImportedMessage | None, str]:
    """A ChatGPT message as one to import, or None and why it is left out (or the message and a note)."""
    if not isinstance(message, dict):
        return None, "Not a message; left out."
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    role = author.get("role")
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    kind = content.get("content_type")
    if role == "tool":
        return None, f"Tool output ({short_text(author.get('name'), 40) or 'a tool'}) left out."
    if role not in ("user", "assistant", "system"):
        return None, f"Unknown role {str(role)[:20]!r}; left out."
    if metadata.get("is_visually_hidden_from_conversation"):
        return None, f"Hidden {role} message left out."
    if role == "assistant" and message.get("recipient") not in (None, "all"):
        return None, f"Tool call to {short_text(message.get('recipient'), 40)} left out."
    if kind not in ("text", "multimodal_text"):
        return None, f"Content of type {str(kind)[:40]!r} left out."
    parts = content.get("parts") if isinstance(content.get("parts"), list) else []
    texts = [p for p in parts if isinstance(p, str)]
    others = len(parts) - len(texts)
    text = clean_text("\n".join(texts)).strip()
    if not text:
        what = "Images or files only" if others else "No text"
        return None, f"{what}; left out."
    if role == "system":
        return None, "System message (instructions) left out."
    finish = metadata.get("finish_details") if isinstance(metadata.get("finish_details"), dict) else {}
    created = epoch_time(message.get("create_time"))
    imported = ImportedMessage(
        key=node_id,
        parent_key=None,
        role=role,
        content=text,
        model_id=short_text(metadata.get("model_slug"), 100),
        finish_reason=CHATGPT_FINISH.get(finish.get("type"), "") if role == "assistant" else "",
        created_at=created,
        completed_at=created if role == "assistant" else None,
    )
    note = f"{others} image(s) or file(s) left out; the text was imported." if others else ""
    return imported, note


# --- Open WebUI ------------------------------------------------------------------------------------------


def read_openwebui_chat(index: int, item: dict) -> ImportedChat:
    """One Open WebUI chat (an export's item, or a bare chat object): its history tree's text messages."""
    body = item["chat"] if isinstance(item.get("chat"), dict) else item
    chat = ImportedChat(
        index,
        title_text(item.get("title") or body.get("title")),
        pinned=item.get("pinned") is True,
        archived=item.get("archived") is True,
        model_id=short_text((body.get("models") or [""])[0] if isinstance(body.get("models"), list) else "", 100),
        created_at=epoch_time(item.get("created_at") or body.get("timestamp")),
        updated_at=epoch_time(item.get("updated_at")),
    )
    history = body.get("history") if isinstance(body.get("history"), dict) else {}
    nodes = history.get("messages")
    if not isinstance(nodes, dict):
        listed = body.get("messages")
        if not isinstance(listed, list):
            chat.problem = "This chat has no messages."
            return chat
        # An older export without the history tree: the list is one branch, each message after the one before.
        nodes, previous = {}, None
        for position, row in enumerate(listed):
            if isinstance(row, dict):
                key = str(row.get("id") or f"#{position}")
                nodes[key] = {"parentId": previous, **row, "id": key}
                previous = key
    kept: dict[str, ImportedMessage] = {}
    for key, row in nodes.items():
        key = str(key)
        if not isinstance(row, dict):
            chat.notes.append((key, "Not a message; left out."))
            continue
        role = row.get("role")
        if role not in ("user", "assistant"):
            what = "System message" if role == "system" else f"Unknown role {str(role)[:20]!r}"
            chat.notes.append((key, f"{what}; left out."))
            continue
        text, images = _openwebui_content(row.get("content"))
        if not text.strip():
            what = "Images or files only" if images or row.get("files") else "No text"
            chat.notes.append((key, f"{what}; left out."))
            continue
        if images or row.get("files"):
            chat.notes.append((key, "Attached images or files left out; the text was imported."))
        usage = row.get("usage") if isinstance(row.get("usage"), dict) else {}
        created = epoch_time(row.get("timestamp"))
        kept[key] = ImportedMessage(
            key=key,
            parent_key=None,
            role=role,
            content=text,
            model_id=short_text(row.get("model"), 100),
            finish_reason="stop" if role == "assistant" and row.get("done", True) is True else "",
            prompt_tokens=token_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
            completion_tokens=token_count(usage.get("completion_tokens", usage.get("output_tokens"))),
            created_at=created,
            completed_at=created if role == "assistant" else None,
        )
    for key, message in kept.items():
        message.parent_key = nearest_kept(nodes, nodes[key].get("parentId"), kept, "parentId")
    chat.messages = list(kept.values())
    return chat


def _openwebui_content(content: Any) -> tuple[str, int]:
    """A message's text and how many non-text parts it had (content is a string, or OpenAI-style parts)."""
    if isinstance(content, str):
        return clean_text(content), 0
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return clean_text("\n".join(texts)), len(content) - len(texts)
    return "", 0
