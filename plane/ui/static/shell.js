// State and helpers shared by the views: messages, the API's operation list, the confirm
// dialog and the flow of an operator action.

import { ApiError, act } from "./api.js";

// -- messages -------------------------------------------------------------------------------

// Both regions stay in the document (empty when idle) so screen readers announce changes.
export function announce(message) {
  document.getElementById("status").textContent = message;
}

export function showError(error, context) {
  const prefix = context ? `${context}: ` : "";
  const status = error instanceof ApiError ? `${error.status} ` : "";
  document.getElementById("alert").textContent = `${prefix}${status}${error.message}`;
}

export function clearError() {
  document.getElementById("alert").textContent = "";
}

/** Show the error of a reload, unless it was aborted because the user left the view. */
export function reportReloadError(error) {
  if (error?.name !== "AbortError") {
    showError(error, "Reloading failed");
  }
}

// -- the API's operations, for showing only what this plane serves ------------------------

// Whether the hub routes respond on this plane: null until the first call, false after a
// 404, which means the routes exist but the plane runs without --hub-enabled.
let hub = null;

export function hubEnabled() {
  return hub;
}

export function setHubEnabled(enabled) {
  hub = enabled;
}

// "METHOD /path" of every operation in the OpenAPI document, the path relative to /api/v1.
let operations = new Set();

/** Read the operations of the plane's OpenAPI document. */
export function setOperations(openapi) {
  const found = new Set();
  for (const [path, item] of Object.entries(openapi.paths || {})) {
    for (const method of Object.keys(item)) {
      found.add(`${method.toUpperCase()} ${path.replace(/^\/api\/v1/, "")}`);
    }
  }
  operations = found;
  hub = null;
}

/** True when the API document lists `method` on `path`, relative to /api/v1 and with
 * parameters as in the document, for example "/nodes/{node}". */
export function hasOperation(method, path) {
  return operations.has(`${method.toUpperCase()} ${path}`);
}

/**
 * Coalesce calls: the first call schedules `callback` `delayMilliseconds` later, and calls
 * until then join it. A burst of live events costs one reload of a view, and a steady
 * stream of them at most one per delay.
 */
export function coalesced(callback, delayMilliseconds = 300) {
  let timer = null;
  return () => {
    if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        callback();
      }, delayMilliseconds);
    }
  };
}

// -- the signed-in token ------------------------------------------------------------------------

// {name, role} from GET /api/v1/whoami, or null when the plane does not serve it.
let user = null;

export function setCurrentUser(value) {
  user = value;
}

export function currentUser() {
  return user;
}

// -- confirmation -----------------------------------------------------------------------------

/** Ask for confirmation in a modal dialog; resolve to true when confirmed. */
export function confirmAction(title, text, confirmLabel) {
  const dialog = document.getElementById("confirm-dialog");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  const opener = document.activeElement;
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  ok.textContent = confirmLabel;
  return new Promise((resolve) => {
    const finish = (confirmed) => {
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) {
        dialog.close();
      }
      opener?.focus?.();
      resolve(confirmed);
    };
    const onOk = () => finish(true);
    const onCancel = () => finish(false);
    const onClose = () => finish(false); // Escape closes the dialog.
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    cancel.focus();
  });
}

// -- actions ------------------------------------------------------------------------------------

/**
 * Run one operator action from `button`: confirm if asked, announce `busy` while the request
 * runs, then announce the result or show the API's error text (for example the 403 of a
 * viewer token). Returns the result, or null when cancelled or failed.
 */
export async function runAction(button, { label, method, path, body, confirm, busy, done }) {
  if (confirm && !(await confirmAction(confirm.title, confirm.text, confirm.ok))) {
    announce(`${label}: cancelled.`);
    return null;
  }
  clearError();
  if (busy) {
    announce(busy);
  }
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const result = await act(method, path, body);
    announce(done ? done(result) : `${label}: done.`);
    return result;
  } catch (error) {
    showError(error, `${label} failed`);
    return null;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
