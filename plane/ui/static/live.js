// Live updates: the API's Server-Sent Events stream of Node and Pod changes
// (GET /api/v1/events/stream), read through fetch because EventSource cannot send the
// Authorization header. Each view that shows live data opens one stream with a filter that
// matches it (for example node=NAME) and applies the summaries the events carry.

import { ApiError, readEventStream, request } from "./api.js";
import { hasOperation } from "./shell.js";

export const EVENT_STREAM_PATH = "/events/stream";
const FIRST_RETRY_MILLISECONDS = 1000;
const MAX_RETRY_MILLISECONDS = 30000;

let controller = null;

function setState(state, text) {
  const element = document.getElementById("live-state");
  element.dataset.state = state;
  element.textContent = text;
}

function parseEvent(message) {
  try {
    return { name: message.event, data: JSON.parse(message.data) };
  } catch {
    return { name: message.event, data: null };
  }
}

/**
 * Read the stream until `signal` aborts, reconnecting with exponential backoff. After each
 * (re)connect `onEvent` gets {name: "connected"}: changes made while disconnected were
 * missed, so the view reloads once. Node and pod changes arrive as
 * {name: "node" | "pod", data: {type, kind, key, object}}.
 */
async function follow(query, onEvent, signal) {
  let delay = FIRST_RETRY_MILLISECONDS;
  while (!signal.aborted) {
    try {
      setState("connecting", "Live updates connecting");
      const response = await request("GET", `${EVENT_STREAM_PATH}?${query}`, {
        signal,
        accept: "text/event-stream",
      });
      setState("on", "Live updates on");
      delay = FIRST_RETRY_MILLISECONDS;
      onEvent({ name: "connected", data: null });
      await readEventStream(response, (message) => onEvent(parseEvent(message)), signal);
      // The plane ended the stream: it restarted, or this page fell behind (overflow).
    } catch (error) {
      if (signal.aborted) {
        return;
      }
      if (error instanceof ApiError && error.status === 401) {
        setState("off", "Live updates off");
        return; // The sign-in flow takes over.
      }
    }
    if (signal.aborted) {
      return;
    }
    setState("retrying", `Live updates reconnecting in ${delay / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, MAX_RETRY_MILLISECONDS);
  }
}

/**
 * Open the stream for the current view. `query` is the stream's query string without
 * snapshot (the view loads its own first state); null means the view is not live.
 */
export function startLiveUpdates(query, onEvent) {
  stopLiveUpdates();
  if (query === null) {
    setState("off", "Live updates off for this view");
    return;
  }
  if (!hasOperation("GET", EVENT_STREAM_PATH)) {
    setState("unavailable", "Live updates not served by this plane");
    return;
  }
  controller = new AbortController();
  const separator = query ? "&" : "";
  follow(`${query}${separator}snapshot=false`, onEvent, controller.signal);
}

export function stopLiveUpdates() {
  controller?.abort();
  controller = null;
  setState("off", "Live updates off");
}
