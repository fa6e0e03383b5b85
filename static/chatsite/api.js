// The JSON API from the browser: session cookie, the CSRF token on every unsafe request, errors as ApiError
// (status + the `{error, message, fields}` body), and a redirect to the login page when the session has ended.

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `The server answered ${status}.`);
    this.status = status;
    this.body = body || {};
  }
}

/** A raw fetch to the API (for streams): `body` is JSON, or a FormData sent as multipart. */
export async function request(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  let payload;
  if (body instanceof FormData) payload = body; // the browser sets the multipart boundary
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  return fetch(path, { method, headers, credentials: "same-origin", body: payload });
}

/** Call the API and return its JSON (null for 204); throws ApiError for any other failure. */
export async function api(method, path, body) {
  const response = await request(method, path, body);
  if (response.status === 401) {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
    throw new ApiError(401, { message: "Your session has ended." });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Every item of a paginated list, following `next`. */
export async function listAll(path) {
  const items = [];
  let url = path;
  while (url) {
    const page = await api("GET", url);
    items.push(...page.results);
    const next = page.next ? new URL(page.next, window.location.href) : null;
    url = next ? next.pathname + next.search : null;
  }
  return items;
}
