// Client of the plane's public REST API under /api/v1.
//
// The bearer token lives in sessionStorage, so it survives a reload of the tab but not the
// tab itself, and it is sent only in the Authorization header: never in a URL, never logged.

export const API_PREFIX = "/api/v1";
const TOKEN_KEY = "temper.plane.token";

/** A request that the API rejected with an error status; `message` is the API's error text. */
export class ApiError extends Error {
  constructor(status, message, request) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.request = request;
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// Called with the ApiError of every 401, so the page can ask for a new token.
let unauthorizedHandler = () => {};

export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") {
      return body.error;
    }
  } catch {
    // Not JSON: fall through to the raw text.
  }
  return text.trim() || response.statusText || "no error text";
}

/**
 * Send one request to `API_PREFIX + path` and return the Response; raise ApiError on an
 * error status. `body`, when given, is sent as JSON.
 */
export async function request(method, path, { body, signal, accept, headers: extra } = {}) {
  const token = storedToken();
  const headers = { Accept: accept || "application/json", ...extra };
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  const init = { method, headers, signal, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const label = `${method} ${API_PREFIX}${path}`;
  const response = await fetch(API_PREFIX + path, init);
  if (!response.ok) {
    const error = new ApiError(response.status, await errorMessage(response), label);
    if (response.status === 401) {
      unauthorizedHandler(error);
    }
    throw error;
  }
  return response;
}

export async function getJson(path, options = {}) {
  const response = await request("GET", path, options);
  return response.json();
}

/** Run an action and return its JSON result. */
export async function act(method, path, body) {
  const response = await request(method, path, { body });
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** Read a JSON-lines body into an array of objects. */
export async function getJsonLines(path, options = {}) {
  const response = await request("GET", path, { ...options, accept: "application/x-ndjson" });
  const text = await response.text();
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line));
}

/**
 * Read a streamed text body chunk by chunk, calling `onText(text)` for each decoded chunk,
 * until the server ends it or `signal` aborts.
 */
export async function readText(response, onText, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const cancel = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      onText(decoder.decode(value, { stream: true }));
    }
    const rest = decoder.decode();
    if (rest) {
      onText(rest);
    }
  } finally {
    signal?.removeEventListener("abort", cancel);
  }
}

/**
 * Parse a text/event-stream body (the Server-Sent Events format) and call
 * `onEvent({event, data, id})` per event. EventSource cannot send an Authorization header,
 * so the stream is read through fetch instead.
 */
export async function readEventStream(response, onEvent, signal) {
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  const dispatch = () => {
    if (event.data.length > 0) {
      onEvent({ event: event.event, data: event.data.join("\n"), id: event.id });
    }
    event = { event: "message", data: [], id: event.id };
  };
  const parseLine = (line) => {
    if (line === "") {
      dispatch();
      return;
    }
    if (line.startsWith(":")) {
      return; // A comment, used as a keep-alive.
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    if (field === "event") {
      event.event = value || "message";
    } else if (field === "data") {
      event.data.push(value);
    } else if (field === "id") {
      event.id = value;
    }
  };
  await readText(
    response,
    (text) => {
      buffer += text;
      // Lines end in LF or CRLF; a lone CR as line end is not supported.
      const lines = buffer.split("\n");
      buffer = lines.pop();
      lines.forEach((line) => parseLine(line.endsWith("\r") ? line.slice(0, -1) : line));
    },
    signal,
  );
}
