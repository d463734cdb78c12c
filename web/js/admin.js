// The admin's pages: theaters with a seat-layout editor that previews the layout exactly as
// customers will see it, movies, and showtimes (scheduling, the screen-busy answer, and
// cancelling). Everything goes through the public API with the admin's token.

import * as api from "./api.js";
import { h, say, fail, session } from "./page.js";
import { drawSeatMap, mapOfLayout } from "./seatmap.js";

const KNOWN_MOVIES = "marquee.admin.movies";

function field(labelText, input, hint) {
  input.id = input.id || `a-${Math.random().toString(36).slice(2)}`;
  const parts = [h("label", { for: input.id }, labelText), input];
  if (hint) {
    input.setAttribute("aria-describedby", `${input.id}-hint`);
    parts.push(h("small", { id: `${input.id}-hint` }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}

function guard(main) {
  if (session.user && session.user.roles.includes("admin")) return true;
  main.append(h("h1", {}, "Admin"), h("p", {}, session.user ? "Your account is not an admin." : "Log in with an admin account. ",
    session.user ? "" : h("a", { href: `#/login?next=${encodeURIComponent("/admin")}` }, "Log in")));
  return false;
}

function tabs(current) {
  const link = (path, text) => h("a", { href: `#${path}`, "aria-current": path === current ? "page" : undefined }, text);
  return h("nav", { class: "tabs", "aria-label": "Admin" }, link("/admin", "Theaters"), link("/admin/movies", "Movies"), link("/admin/showtimes", "Showtimes"));
}

// ---- Theaters and the layout editor ---------------------------------------------------

const EXAMPLE_LAYOUT = "ss.ssss.ss\nss.ssss.ss\npp.pppp.pp\nww.cccc.ww";

/** One screen's editor: a name, the layout as text, and the live preview. */
function screenEditor(index) {
  const name = h("input", { name: `screen-${index}-name`, value: `Screen ${index + 1}`, required: true });
  const layout = h("textarea", { name: `screen-${index}-layout`, rows: 8, cols: 30, spellcheck: "false", class: "layout" }, EXAMPLE_LAYOUT);
  const preview = h("div", { class: "preview", "aria-label": `Preview of screen ${index + 1}` });
  const status = h("p", { class: "layout-status", "aria-live": "polite" });
  const redraw = () => {
    const rows = lines(layout.value);
    const bad = rows.flatMap((r, i) => [...r].filter((c) => !"spwc.".includes(c)).map((c) => `row ${i + 1}: “${c}”`));
    const map = mapOfLayout(rows);
    drawSeatMap(preview, map);
    const counts = {};
    map.rows.forEach((r) => r.seats.forEach((s) => (counts[s.kind] = (counts[s.kind] || 0) + 1)));
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    status.textContent = bad.length
      ? `Unknown seat letters: ${bad.join(", ")}. Use s, p, w, c, or . for an aisle.`
      : `${rows.length} rows, ${total} seats (${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ")}).`;
    status.dataset.kind = bad.length ? "error" : "info";
  };
  layout.addEventListener("input", redraw);
  const box = h("fieldset", { class: "screen-editor" }, h("legend", {}, `Screen ${index + 1}`),
    field("Name", name),
    h("div", { class: "layout-edit" },
      field("Seat layout", layout, "One line per row, front row first. s standard, p premium, w wheelchair, c companion, . aisle or gap."),
      h("div", {}, h("p", { class: "preview-title" }, "As customers will see it"), preview)),
    status);
  redraw();
  return { box, value: () => ({ name: name.value.trim(), layout: lines(layout.value) }) };
}

function lines(text) {
  return text.split("\n").map((l) => l.trimEnd()).filter((l) => l.length);
}

export async function theaters(main) {
  if (!guard(main)) return;
  const list = h("ul", { class: "admin-list" });
  const load = async () => {
    const { theaters: found } = await api.get("/v1/theaters?limit=100");
    list.replaceChildren(...found.map((t) => h("li", {}, h("strong", {}, t.name), ` — ${t.city}; `,
      t.screens.map((s) => `${s.name} (${s.capacity} seats)`).join(", "))));
    if (!found.length) list.append(h("li", {}, "No theaters yet."));
  };
  const inputs = {
    name: h("input", { name: "name", required: true }),
    address: h("input", { name: "address", required: true }),
    city: h("input", { name: "city", required: true }),
    lat: h("input", { name: "lat", inputmode: "decimal", required: true }),
    lon: h("input", { name: "lon", inputmode: "decimal", required: true }),
    timezone: h("input", { name: "timezone", required: true, value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" }),
  };
  const screens = [screenEditor(0)];
  const screenBox = h("div", {}, screens[0].box);
  const addScreen = h("button", { type: "button", class: "secondary", onclick: () => {
    const editor = screenEditor(screens.length);
    screens.push(editor);
    screenBox.append(editor.box);
  } }, "Add a screen");
  const form = h("form", { id: "theater-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const t = await api.post("/v1/theaters", {
        name: inputs.name.value, address: inputs.address.value, city: inputs.city.value,
        location: { lat: Number(inputs.lat.value), lon: Number(inputs.lon.value) },
        timezone: inputs.timezone.value, screens: screens.map((s) => s.value()),
      });
      say(`Theater “${t.name}” added with ${t.screens.length} screen${t.screens.length > 1 ? "s" : ""}.`, "success");
      form.reset();
      await load();
    } catch (err) {
      fail(err);
    }
  } },
    h("fieldset", {}, h("legend", {}, "Theater"),
      field("Name", inputs.name), field("Address", inputs.address), field("City", inputs.city),
      field("Latitude", inputs.lat), field("Longitude", inputs.lon), field("Time zone", inputs.timezone, "IANA name, e.g. Europe/Paris")),
    screenBox, addScreen, h("button", { type: "submit" }, "Add theater"));
  main.append(h("h1", {}, "Admin"), tabs("/admin"), h("h2", {}, "Theaters"), list, h("h2", {}, "New theater"), form);
  await load();
}

// ---- Movies ---------------------------------------------------------------------------

function knownMovies() {
  try {
    return JSON.parse(localStorage.getItem(KNOWN_MOVIES)) || [];
  } catch {
    return [];
  }
}

/** Movies the admin can schedule: the ones playing, plus the ones added in this browser
 *  (the API lists movies by where they play, so a new movie has no other way to be found). */
async function movieChoices() {
  const playing = (await api.get("/v1/movies")).movies.map((m) => ({ id: m.id, title: m.title }));
  const all = new Map([...knownMovies(), ...playing].map((m) => [m.id, m]));
  return [...all.values()];
}

export async function movies(main) {
  if (!guard(main)) return;
  const list = h("ul", { class: "admin-list" });
  const load = async () => {
    const choices = await movieChoices();
    list.replaceChildren(...choices.map((m) => h("li", {}, m.title)));
    if (!choices.length) list.append(h("li", {}, "No movies yet."));
  };
  const inputs = {
    title: h("input", { name: "title", required: true }),
    runtime: h("input", { name: "runtime", type: "number", min: 1, max: 1000, required: true }),
    rating: h("input", { name: "rating" }),
    genres: h("input", { name: "genres" }),
    language: h("input", { name: "language" }),
    synopsis: h("textarea", { name: "synopsis", rows: 3 }),
  };
  const form = h("form", { id: "movie-form", onsubmit: async (e) => {
    e.preventDefault();
    const genres = inputs.genres.value.split(",").map((g) => g.trim()).filter(Boolean);
    try {
      const m = await api.post("/v1/movies", {
        title: inputs.title.value, runtime_minutes: Number(inputs.runtime.value),
        rating: inputs.rating.value || undefined, genres, language: inputs.language.value || undefined,
        synopsis: inputs.synopsis.value || undefined,
      });
      localStorage.setItem(KNOWN_MOVIES, JSON.stringify([...knownMovies(), { id: m.id, title: m.title }]));
      say(`Movie “${m.title}” added.`, "success");
      form.reset();
      await load();
    } catch (err) {
      fail(err);
    }
  } },
    field("Title", inputs.title), field("Runtime (minutes)", inputs.runtime), field("Rating", inputs.rating),
    field("Genres", inputs.genres, "Comma separated"), field("Language", inputs.language), field("Synopsis", inputs.synopsis),
    h("button", { type: "submit" }, "Add movie"));
  main.append(h("h1", {}, "Admin"), tabs("/admin/movies"), h("h2", {}, "Movies"), list, h("h2", {}, "New movie"), form);
  await load();
}

// ---- Showtimes ------------------------------------------------------------------------

const KIND_OF = { s: "standard", p: "premium", w: "wheelchair", c: "companion" };

export async function showtimes(main) {
  if (!guard(main)) return;
  const [{ theaters: allTheaters }, choices] = await Promise.all([api.get("/v1/theaters?limit=100"), movieChoices()]);
  const movie = h("select", { name: "movie", required: true }, choices.map((m) => h("option", { value: m.id }, m.title)));
  const theater = h("select", { name: "theater", required: true }, allTheaters.map((t) => h("option", { value: t.id }, `${t.name}, ${t.city}`)));
  const screen = h("select", { name: "screen", required: true });
  const starts = h("input", { name: "starts", type: "datetime-local", required: true });
  const format = h("input", { name: "format" });
  const currency = h("input", { name: "currency", value: "EUR", size: 3, maxlength: 3, required: true });
  const priceBox = h("div", { class: "prices" });
  const list = h("ul", { class: "admin-list", "aria-live": "polite" });
  const prices = {};

  const current = () => allTheaters.find((t) => t.id === theater.value);
  const pickTheater = async () => {
    const t = current();
    screen.replaceChildren(...(t ? t.screens : []).map((s) => h("option", { value: s.id }, `${s.name} (${s.capacity} seats)`)));
    pickScreen();
    await loadShowtimes();
  };
  const pickScreen = () => {
    const s = current() && current().screens.find((x) => x.id === screen.value);
    const kinds = new Set((s ? s.layout.join("") : "").split("").map((c) => KIND_OF[c]).filter(Boolean));
    priceBox.replaceChildren();
    for (const kind of kinds) {
      prices[kind] = prices[kind] || h("input", { name: `price-${kind}`, inputmode: "decimal", value: kind === "premium" ? "15.00" : "10.00", required: true });
      priceBox.append(field(`${kind} price`, prices[kind]));
    }
  };
  const loadShowtimes = async () => {
    if (!theater.value) return [];
    const { showtimes: found } = await api.get(`/v1/showtimes${api.query({ theater_id: theater.value })}`);
    const titles = new Map(choices.map((m) => [m.id, m.title]));
    list.replaceChildren(...found.map((s) => h("li", {},
      `${titles.get(s.movie_id) || s.movie_id} — ${new Date(s.starts_at).toLocaleString()} — ${s.status}, ${s.seats_available}/${s.capacity} free `,
      h("a", { href: `#/showtime/${s.id}` }, "seat map"), " ",
      s.status === "scheduled" ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm("Cancel this showtime? Holds are released and tickets refunded.")) return;
        try {
          await api.del(`/v1/showtimes/${s.id}`);
          say("Showtime cancelled; its tickets are refunded.", "success");
          await untilListed(s.id, "cancelled");
        } catch (err) {
          fail(err);
        }
      } }, "Cancel showtime") : "")));
    if (!found.length) list.append(h("li", {}, "No upcoming showtimes at this theater."));
    return found;
  };
  // The list is a read model that follows the event stream a moment behind the command:
  // reload it until it shows what was just done (for up to three seconds).
  const untilListed = async (id, status) => {
    for (let i = 0; i < 30; i++) {
      if ((await loadShowtimes()).some((s) => s.id === id && s.status === status)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  theater.addEventListener("change", pickTheater);
  screen.addEventListener("change", pickScreen);

  const form = h("form", { id: "showtime-form", onsubmit: async (e) => {
    e.preventDefault();
    const body = {
      movie_id: movie.value, theater_id: theater.value, screen_id: screen.value,
      starts_at: new Date(starts.value).toISOString(), format: format.value || undefined, prices: {},
    };
    for (const el of priceBox.querySelectorAll("input")) {
      const kind = el.name.replace("price-", "");
      body.prices[kind] = { amount: Math.round(Number(el.value) * 100), currency: currency.value.toUpperCase() };
    }
    try {
      const s = await api.post("/v1/showtimes", body);
      say(`Showtime scheduled for ${new Date(s.starts_at).toLocaleString()}.`, "success");
      await untilListed(s.id, "scheduled");
    } catch (err) {
      fail(err);
    }
  } },
    field("Movie", movie), field("Theater", theater), field("Screen", screen),
    field("Starts at", starts, "In this browser's time zone."), field("Format", format, "Optional, e.g. IMAX 3D"),
    field("Currency", currency), priceBox, h("button", { type: "submit" }, "Schedule showtime"));
  main.append(h("h1", {}, "Admin"), tabs("/admin/showtimes"), h("h2", {}, "Schedule a showtime"),
    choices.length && allTheaters.length ? form : h("p", {}, "Add a theater and a movie first."),
    h("h2", {}, "Showtimes at this theater"), list);
  if (!choices.length) say("Add a movie first.", "info");
  await pickTheater();
}
