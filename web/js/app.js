// The shell of Marquee's pages: the hash router and the header's buttons. Pages are hash
// routes (`#/showtime/<id>`) so the server serves one document and every link works offline
// and after a reload. What the pages share is in `page.js`.

import * as api from "./api.js";
import * as customer from "./customer.js";
import * as admin from "./admin.js";
import { fail, go, h, here, leave, refreshSession, say } from "./page.js";

const main = document.getElementById("main");

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

async function render() {
  leave();
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
