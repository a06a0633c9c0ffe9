// The plane's web UI: sign-in, the hash router and start-up. The views are in views.js,
// explorer.js and savings.js; every request goes to the public API under /api/v1.

import { forgetToken, getJson, onUnauthorized, storeToken, storedToken } from "./api.js";
import { startLiveUpdates, stopLiveUpdates } from "./live.js";
import {
  announce,
  clearError,
  currentUser,
  hasOperation,
  setCurrentUser,
  setOperations,
  showError,
} from "./shell.js";
import { routeFor } from "./views.js";

const page = {
  signIn: () => document.getElementById("sign-in"),
  tokenInput: () => document.getElementById("token-input"),
  session: () => document.getElementById("session"),
  user: () => document.getElementById("user"),
  nav: () => document.getElementById("main-nav"),
  main: () => document.getElementById("main"),
};

// The current view's AbortController; aborting it stops the view's requests and streams.
let currentAbort = null;

// -- sign-in --------------------------------------------------------------------------------

async function signIn(token) {
  storeToken(token);
  clearError();
  try {
    setOperations(await getJson("/openapi.json"));
    setCurrentUser(hasOperation("GET", "/whoami") ? await getJson("/whoami") : null);
  } catch (error) {
    forgetToken();
    showSignedOut();
    showError(error, "Sign-in failed");
    return;
  }
  showSignedIn();
  if (!location.hash.startsWith("#/")) {
    location.hash = "#/clusters";
  } else {
    render();
  }
}

function signOut() {
  forgetToken();
  setOperations({});
  setCurrentUser(null);
  showSignedOut();
  announce("Signed out.");
}

function showSignedIn() {
  const user = currentUser();
  page.signIn().hidden = true;
  page.tokenInput().value = "";
  page.session().hidden = false;
  page.user().textContent = user ? `${user.name} (${user.role})` : "Signed in";
  page.nav().hidden = false;
  for (const item of page.nav().querySelectorAll("[data-view]")) {
    let visible = true;
    if (item.dataset.view === "savings") {
      visible = hasOperation("GET", "/savings");
    } else if (item.dataset.view === "audit") {
      // Without /whoami the role is unknown: show the view and let the API decide.
      visible = !user || user.role === "admin";
    }
    item.parentElement.hidden = !visible;
  }
}

function showSignedOut() {
  currentAbort?.abort();
  currentAbort = null;
  stopLiveUpdates();
  page.signIn().hidden = false;
  page.session().hidden = true;
  page.nav().hidden = true;
  const main = page.main();
  main.replaceChildren();
  const title = document.createElement("h1");
  title.textContent = "Sign in";
  const text = document.createElement("p");
  text.textContent = "Enter an API token of the management plane to continue.";
  main.append(title, text);
  page.tokenInput().focus();
}

// -- routing ----------------------------------------------------------------------------------

function markCurrentNav(name) {
  for (const item of page.nav().querySelectorAll("[data-view]")) {
    if (item.dataset.view === name) {
      item.setAttribute("aria-current", "page");
    } else {
      item.removeAttribute("aria-current");
    }
  }
}

async function render() {
  if (!storedToken() || page.session().hidden) {
    return;
  }
  currentAbort?.abort();
  stopLiveUpdates();
  const abort = new AbortController();
  currentAbort = abort;
  const { name, view, params } = routeFor(location.hash);
  markCurrentNav(name);
  clearError();

  const main = page.main();
  main.replaceChildren();
  main.setAttribute("aria-busy", "true");
  let handle = null;
  try {
    handle = await view(main, params, abort.signal);
  } catch (error) {
    if (!abort.signal.aborted) {
      showError(error, "Loading the view failed");
    }
  } finally {
    if (!abort.signal.aborted) {
      main.removeAttribute("aria-busy");
    }
  }
  if (abort.signal.aborted) {
    return;
  }

  startLiveUpdates(handle?.live ?? null, (event) => handle.onChange(event));
  // Move focus to the view's heading so screen readers announce the new page.
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
  document.title = `${heading?.textContent ?? "Temper"} – Temper plane`;
}

// -- start-up ---------------------------------------------------------------------------------

function start() {
  onUnauthorized((error) => {
    if (page.session().hidden) {
      return; // A failed sign-in reports the error itself.
    }
    signOut();
    showError(error, "The token was rejected, sign in again");
  });
  page.signIn().addEventListener("submit", (event) => {
    event.preventDefault();
    const token = page.tokenInput().value.trim();
    if (token) {
      signIn(token);
    }
  });
  document.getElementById("sign-out").addEventListener("click", signOut);
  document.getElementById("skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    page.main().focus();
  });
  window.addEventListener("hashchange", render);
  clearError();
  const token = storedToken();
  if (token) {
    signIn(token);
  } else {
    showSignedOut();
  }
}

start();
