// Read a Server-Sent Events response from fetch (EventSource cannot POST or send headers).
// Parsing follows the WHATWG HTML "event stream interpretation": events end at a blank line, lines starting
// with ":" are comments (our keep-alive pings), "id:" sets the last event id, "data:" lines are joined by "\n".

/**
 * Yield {id, data} for each event of `response`'s body until it ends or `signal` aborts.
 * @param {Response} response a fetch response whose body is text/event-stream
 * @returns {AsyncGenerator<{id: string|null, data: string}>}
 */
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer[end] === "\r" ? 4 : 2));
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseBlock(block) {
  let id = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { id, data: data.join("\n") } : null;
}
