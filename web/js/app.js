// The shell of Marquee's pages: who is signed in, the hash router, and one place to show a
// message. Pages are hash routes (`#/showtime/<id>`) so the server serves one document and
// every link works offline and after a reload.

import * as api from "./api.js";
import * as customer from "./customer.js";
import * as admin from "./admin.js";

const main = document.getElementById("main");
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

const routes = [
  [/^\/$/, customer.home],
  [/^\/movie\/([^/]+)$/, customer.movie],
  [/^\/showtime\/([^/]+)$/, customer.showtime],
  [/^\/tickets$/, customer.tickets],
  [/^\/login$/, customer.login],
  [/^\/register$/, customer.register],
  [/^\/admin$/, admin.theaters],
  [/^\/admin\/movies$/, admin.movies],
  [/^\/admin\/showtimes$/, admin.showtimes],
];

/** The current route's path and query, from the hash. */
export function here() {
  const [path, q] = (location.hash.slice(1) || "/").split("?");
  return { path, params: new URLSearchParams(q || "") };
}

export function go(path) {
  location.hash = `#${path}`;
}

async function render() {
  leaving.forEach((fn) => fn());
  leaving = [];
  say("");
  const { path, params } = here();
  const found = routes.find(([re]) => re.test(path));
  main.replaceChildren();
  if (!found) {
    main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Find a movie")));
    return;
  }
  const [re, view] = found;
  try {
    await view(main, ...path.match(re).slice(1).map(decodeURIComponent), params);
  } catch (e) {
    fail(e);
  }
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

document.getElementById("logout").addEventListener("click", async () => {
  api.setToken(null);
  await refreshSession();
  say("You are logged out.", "info");
  go("/");
});

window.addEventListener("hashchange", async () => {
  await render();
  main.focus();
});

await refreshSession();
await render();
