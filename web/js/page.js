// What every page shares: who is signed in, one place to show a message, leaving a page,
// moving between pages, and building elements. The shell (`app.js`) routes to the pages;
// the pages (`customer.js`, `admin.js`) use this.

import * as api from "./api.js";

const messageBox = document.getElementById("message");
let leaving = [];

/** Who is signed in: the API's User, or null. */
export const session = { user: null };

/** Shows a message (an error by default) in the live region. */
export function say(text, kind = "error") {
  messageBox.textContent = text;
  messageBox.dataset.kind = kind;
  messageBox.hidden = !text;
}

/** Shows an error from the API (or anything thrown) as its human sentence. */
export function fail(error) {
  say(error instanceof api.ApiError ? error.message : String(error.message || error));
}

/** Runs a function when the current page is left (closing streams, stopping timers). */
export function onLeave(fn) {
  leaving.push(fn);
}

/** Leaves the current page: runs what it asked to run on leaving. */
export function leave() {
  leaving.forEach((fn) => fn());
  leaving = [];
}

export async function refreshSession() {
  session.user = null;
  if (api.token()) {
    try {
      session.user = await api.get("/v1/users/me");
    } catch {
      api.setToken(null);
    }
  }
  const state = session.user ? "signed-in" : "signed-out";
  const isAdmin = session.user && session.user.roles.includes("admin");
  for (const el of document.querySelectorAll("[data-when]")) {
    const when = el.dataset.when;
    el.hidden = !(when === state || (when === "admin" && isAdmin));
  }
  document.querySelector(".who").textContent = session.user ? session.user.name : "";
}

/** The current route's path and query, from the hash. */
export function here() {
  const [path, q] = (location.hash.slice(1) || "/").split("?");
  return { path, params: new URLSearchParams(q || "") };
}

export function go(path) {
  location.hash = `#${path}`;
}

/** Builds an element: h("button", {type: "button", onclick}, "text", child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}
