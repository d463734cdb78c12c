// The customer's pages: finding movies near a point, a movie's showtimes by date, the live
// seat map with holding and paying, tickets with QR codes, registering and logging in.

import * as api from "./api.js";
import { h, say, fail, go, onLeave, session, refreshSession } from "./page.js";
import { drawSeatMap, followSeats } from "./seatmap.js";
import { qrSvg } from "./qr.js";

const MAX_SEATS = 10;
const theaterCache = new Map();

async function theater(id) {
  if (!theaterCache.has(id)) theaterCache.set(id, api.get(`/v1/theaters/${id}`));
  return theaterCache.get(id);
}

/** A time in a theater's own time zone, e.g. "Sat 29 Nov, 20:00". */
function when(iso, timeZone) {
  const options = { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hour12: false };
  // Without the theater's zone (a ticket does not carry it), say which zone the time is in.
  if (!timeZone) options.timeZoneName = "short";
  try {
    return new Intl.DateTimeFormat("en-GB", { ...options, timeZone }).format(new Date(iso));
  } catch {
    return new Intl.DateTimeFormat("en-GB", options).format(new Date(iso));
  }
}

function field(labelText, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const parts = [h("label", { for: id }, labelText), input];
  if (hint) {
    input.setAttribute("aria-describedby", `${id}-hint`);
    parts.push(h("small", { id: `${id}-hint` }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}

function today() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

// ---- Home: movies and theaters near a point -------------------------------------------

export async function home(main, params) {
  const lat = params.get("lat");
  const lon = params.get("lon");
  const place = h("input", { name: "place", type: "search", autocomplete: "address-level2", value: params.get("place") || "" });
  const latInput = h("input", { name: "lat", inputmode: "decimal", value: lat || "" });
  const lonInput = h("input", { name: "lon", inputmode: "decimal", value: lon || "" });
  const date = h("input", { name: "date", type: "date", value: params.get("date") || "" });
  const results = h("div", { id: "results", "aria-live": "polite" });

  const search = (point) => {
    const q = api.query({ lat: point.lat, lon: point.lon, date: date.value, place: point.place });
    go(`/${q}`);
  };
  const form = h("form", { class: "search", onsubmit: async (e) => {
    e.preventDefault();
    if (latInput.value && lonInput.value) return search({ lat: latInput.value, lon: lonInput.value });
    if (!place.value.trim()) return say("Type a city or theater, enter a point, or use your location.");
    try {
      const found = await api.get(`/v1/theaters${api.query({ q: place.value.trim(), limit: 1 })}`);
      if (!found.theaters.length) return say(`No theater found for “${place.value}”.`);
      const t = found.theaters[0];
      search({ lat: t.location.lat, lon: t.location.lon, place: place.value.trim() });
    } catch (err) {
      fail(err);
    }
  } },
    h("fieldset", {}, h("legend", {}, "Where are you?"),
      h("button", { type: "button", id: "locate", onclick: () => locate(search) }, "Use my location"),
      field("City or theater", place),
      h("details", { open: lat && !params.get("place") ? true : undefined }, h("summary", {}, "Or enter a point"),
        field("Latitude", latInput), field("Longitude", lonInput))),
    field("Date", date, "Leave empty for every upcoming day."),
    h("button", { type: "submit" }, "Find movies"));

  main.append(h("h1", {}, "Find a movie near you"), form, results);
  if (lat && lon) await showNear(results, { lat, lon, date: params.get("date") });
}

function locate(search) {
  if (!navigator.geolocation) return say("This browser cannot tell your location; type a city instead.");
  say("Finding your location…", "info");
  navigator.geolocation.getCurrentPosition(
    (p) => search({ lat: p.coords.latitude.toFixed(4), lon: p.coords.longitude.toFixed(4) }),
    () => say("Your location is not available; type a city instead."),
    { timeout: 10000 },
  );
}

async function showNear(results, { lat, lon, date }) {
  const [movies, theaters] = await Promise.all([
    api.get(`/v1/movies${api.query({ lat, lon, date, radius_km: 50 })}`),
    api.get(`/v1/theaters${api.query({ lat, lon, radius_km: 50 })}`),
  ]);
  const zones = new Map(theaters.theaters.map((t) => [t.id, t.timezone]));
  const list = h("ul", { class: "movies" });
  for (const m of movies.movies) {
    const link = `#/movie/${m.id}${api.query({ lat, lon, date })}`;
    list.append(h("li", { class: "movie" },
      h("h3", {}, h("a", { href: link }, m.title)),
      h("p", { class: "meta" }, [`${m.runtime_minutes} min`, m.rating, (m.genres || []).join(", ")].filter(Boolean).join(" · ")),
      showtimeLinks(m.showtimes.slice(0, 8), zones)));
  }
  results.replaceChildren(
    h("h2", {}, `Playing near ${Number(lat).toFixed(3)}, ${Number(lon).toFixed(3)}`),
    movies.movies.length ? list : h("p", {}, "No showtimes near there. Try a wider area or another date."),
    h("h2", {}, "Theaters near there"),
    h("ul", { class: "theaters" }, theaters.theaters.map((t) =>
      h("li", {}, h("strong", {}, t.name), ` — ${t.address}, ${t.city}`,
        t.distance_km !== undefined ? ` (${t.distance_km.toFixed(1)} km)` : ""))));
}

function showtimeLinks(showtimes, zones) {
  return h("ul", { class: "showtimes" }, showtimes.map((s) =>
    h("li", {}, h("a", { class: "showtime-link", href: `#/showtime/${s.id}` },
      h("span", {}, when(s.starts_at, zones.get(s.theater_id))),
      h("span", {}, s.theater_name || ""),
      h("span", { class: "left" }, `${s.seats_available} seats left`),
      s.format ? h("span", {}, s.format) : null))));
}

// ---- A movie's showtimes by date ------------------------------------------------------

export async function movie(main, id, params) {
  const m = await api.get(`/v1/movies/${id}`);
  const date = params.get("date") || "";
  const lat = params.get("lat");
  const lon = params.get("lon");
  const days = h("nav", { class: "days", "aria-label": "Dates" },
    h("a", { href: `#/movie/${id}${api.query({ lat, lon })}`, "aria-current": date ? undefined : "date" }, "All upcoming"));
  for (let i = 0; i < 7; i++) {
    const d = new Date();
    d.setDate(d.getDate() + i);
    const iso = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
    const text = new Intl.DateTimeFormat("en-GB", { weekday: "short", day: "numeric", month: "short" }).format(d);
    days.append(h("a", { href: `#/movie/${id}${api.query({ lat, lon, date: iso })}`, "aria-current": iso === date ? "date" : undefined }, text));
  }
  const shows = await api.get(`/v1/showtimes${api.query({ movie_id: id, date })}`);
  const zones = new Map();
  const named = await Promise.all(shows.showtimes.filter((s) => s.status === "scheduled").map(async (s) => {
    const t = await theater(s.theater_id);
    zones.set(t.id, t.timezone);
    return { ...s, theater_name: t.name };
  }));
  // Grouped by day, in each theater's own time zone.
  const byDay = new Map();
  for (const s of named) {
    const day = new Intl.DateTimeFormat("en-GB", { weekday: "long", day: "numeric", month: "long", timeZone: zones.get(s.theater_id) }).format(new Date(s.starts_at));
    if (!byDay.has(day)) byDay.set(day, []);
    byDay.get(day).push(s);
  }
  main.append(
    h("h1", {}, m.title),
    h("p", { class: "meta" }, [`${m.runtime_minutes} min`, m.rating, (m.genres || []).join(", "), m.language].filter(Boolean).join(" · ")),
    m.synopsis ? h("p", {}, m.synopsis) : "",
    days,
    ...[...byDay].flatMap(([day, list]) => [h("h2", {}, day), showtimeLinks(list, zones)]),
    named.length ? "" : h("p", {}, date ? "No showtimes that day." : "No upcoming showtimes."),
  );
}

// ---- The seat map, holding and paying ---------------------------------------------------

const HOLD_KEY = (id) => `marquee.hold.${id}`;

export async function showtime(main, id) {
  const show = await api.get(`/v1/showtimes/${id}`);
  const [m, t] = await Promise.all([api.get(`/v1/movies/${show.movie_id}`), theater(show.theater_id)]);
  const screen = t.screens.find((s) => s.id === show.screen_id);
  const selected = new Set();
  const mine = new Set();
  let map = null;
  let hold = null;

  const mapBox = h("div", { id: "seatmap", role: "group", "aria-label": "Seat map, the screen is at the front" });
  const live = h("p", { class: "live", "aria-live": "polite" }, "Connecting to the live seat map…");
  const summary = h("p", { id: "selection", "aria-live": "polite" });
  const holdButton = h("button", { type: "button", id: "hold", disabled: true }, "Hold seats");
  const holdPanel = h("section", { id: "checkout", "aria-labelledby": "checkout-title", hidden: true });

  const toggle = (seat) => {
    if (mine.has(seat)) return;
    if (selected.has(seat)) selected.delete(seat);
    else if (selected.size >= MAX_SEATS) return say(`You can pick at most ${MAX_SEATS} seats.`);
    else selected.add(seat);
    map.setStatus(seat, map.seats.get(seat).status);
    updateSummary();
  };
  const updateSummary = () => {
    const seats = [...selected];
    const total = seats.reduce((sum, s) => sum + map.seats.get(s).price.amount, 0);
    const currency = seats.length ? map.seats.get(seats[0]).price.currency : "";
    summary.textContent = seats.length
      ? `Selected: ${seats.join(", ")} — ${api.money({ amount: total, currency })}`
      : "Pick your seats on the map.";
    holdButton.disabled = seats.length === 0;
    holdButton.textContent = seats.length ? `Hold ${seats.length} seat${seats.length > 1 ? "s" : ""}` : "Hold seats";
  };

  const stop = followSeats(id, {
    onSnapshot: (snapshot) => {
      map = drawSeatMap(mapBox, snapshot, { onToggle: toggle, selected, mine });
      const free = new Set(snapshot.rows.flatMap((r) => r.seats.filter((x) => x.status === "available").map((x) => x.seat)));
      for (const s of [...selected]) if (!free.has(s)) selected.delete(s);
      updateSummary();
      live.textContent = "Live: seats update as others book.";
    },
    onSeat: ({ seat, status }) => {
      if (!map) return;
      if (status !== "available" && selected.has(seat) && !mine.has(seat)) {
        selected.delete(seat);
        say(`${seat} was just taken by someone else.`);
        updateSummary();
      }
      if (status === "available" && mine.has(seat) && hold) mine.delete(seat);
      map.setStatus(seat, status);
    },
    onCancelled: () => say("This showtime has been cancelled."),
    onConnection: (up) => { if (!up) live.textContent = "Reconnecting to the live seat map…"; },
  });
  onLeave(stop);

  holdButton.addEventListener("click", async () => {
    if (!session.user) {
      say("Log in to hold seats.");
      return go(`/login?next=${encodeURIComponent(`/showtime/${id}`)}`);
    }
    holdButton.disabled = true;
    try {
      const r = await api.post("/v1/reservations", { showtime_id: id, seats: [...selected] });
      mine.clear();
      r.seats.forEach((s) => mine.add(s));
      selected.clear();
      startHold(r);
      map.refresh();
      updateSummary();
    } catch (e) {
      fail(e);
      if (e.slug === "seats-unavailable") for (const s of e.problem.seats || []) { selected.delete(s); map.setStatus(s, "held"); }
      updateSummary();
    }
  });

  const startHold = (reservation) => {
    hold = { ...reservation, deadline: Date.now() + reservation.expires_in_seconds * 1000 };
    sessionStorage.setItem(HOLD_KEY(id), reservation.id);
    showCheckout(holdPanel, hold, {
      onPaid: (paid) => {
        sessionStorage.removeItem(HOLD_KEY(id));
        say(`Paid. ${paid.tickets.length} ticket${paid.tickets.length > 1 ? "s" : ""} issued.`, "success");
        go(`/tickets?expect=${paid.tickets.map((t) => t.id).join(",")}`);
      },
      onGone: () => {
        sessionStorage.removeItem(HOLD_KEY(id));
        mine.clear();
        hold = null;
        holdPanel.hidden = true;
        map && map.refresh();
      },
    });
  };

  main.append(
    h("h1", {}, m.title),
    h("p", { class: "meta" }, `${t.name}, ${screen ? screen.name : ""} — ${when(show.starts_at, t.timezone)}${show.format ? ` · ${show.format}` : ""}`),
    show.status === "cancelled" ? h("p", { class: "warning" }, "This showtime has been cancelled.") : "",
    h("div", { class: "booking" },
      h("section", { class: "map-area", "aria-labelledby": "map-title" },
        h("h2", { id: "map-title" }, "Choose your seats"),
        live, mapBox, legend(show.prices), summary, holdButton),
      holdPanel));

  // A hold made earlier in this tab survives a reload.
  const earlier = sessionStorage.getItem(HOLD_KEY(id));
  if (earlier && session.user) {
    try {
      const r = await api.get(`/v1/reservations/${earlier}`);
      if (r.status === "held" || r.status === "paying") {
        r.seats.forEach((s) => mine.add(s));
        startHold(r);
        map && map.refresh();
      } else sessionStorage.removeItem(HOLD_KEY(id));
    } catch {
      sessionStorage.removeItem(HOLD_KEY(id));
    }
  }
}

function legend(prices) {
  const item = (cls, text) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
  const kinds = Object.entries(prices).map(([k, p]) => item(`kind-${k}`, `${k} ${api.money(p)}`));
  return h("ul", { class: "legend", "aria-label": "Legend" }, ...kinds,
    item("state-held", "taken"), item("state-mine", "yours"), item("state-picked", "picked"));
}

/** The hold's countdown and the card form. */
function showCheckout(panel, hold, { onPaid, onGone }) {
  const timer = h("span", { role: "timer", id: "countdown", "aria-atomic": "true" });
  const announce = h("p", { class: "sr-only", "aria-live": "polite" });
  const card = h("input", { name: "card", inputmode: "numeric", autocomplete: "cc-number", required: true, pattern: "[0-9 ]{12,23}" });
  const pay = h("button", { type: "submit", id: "pay" }, `Pay ${api.money(hold.total)}`);
  const release = h("button", { type: "button", class: "secondary" }, "Let the seats go");
  // One random Idempotency-Key per payment attempt (never the card: the server keeps keys for
  // a day). Paying again after an unknown outcome (`outcomeUnknown`: no answer, 409, 5xx) is
  // the same attempt: a payment whose answer was lost gets that answer again (the tickets)
  // instead of a 409 "already paid" for a new key. A definite answer (a decline) or another
  // card starts a new attempt.
  let attemptKey = null;
  card.addEventListener("input", () => { attemptKey = null; });
  const form = h("form", { id: "pay-form", onsubmit: async (e) => {
    e.preventDefault();
    pay.disabled = true;
    pay.textContent = "Paying…";
    attemptKey ??= api.idempotencyKey();
    try {
      const paid = await api.post("/v1/tickets", { reservation_id: hold.id, payment: { card_number: card.value.replace(/\s+/g, "") } },
        { "Idempotency-Key": attemptKey });
      clearInterval(tick);
      onPaid(paid);
    } catch (err) {
      if (!err.outcomeUnknown) attemptKey = null;
      fail(err);
      if (err.slug === "reservation-expired" || err.slug === "not-found") {
        clearInterval(tick);
        onGone();
      }
    } finally {
      pay.disabled = false;
      pay.textContent = `Pay ${api.money(hold.total)}`;
    }
  } },
    field("Card number", card, "Test cards: 4242 4242 4242 4242 pays; 4000 0000 0000 0002 is declined."),
    pay);
  release.addEventListener("click", async () => {
    try {
      await api.del(`/v1/reservations/${hold.id}`);
    } catch (err) {
      fail(err);
    }
    clearInterval(tick);
    onGone();
    say("Your seats were let go.", "info");
  });

  const spoken = new Set();
  const update = () => {
    const left = Math.max(0, Math.round((hold.deadline - Date.now()) / 1000));
    timer.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    for (const mark of [300, 60, 30]) {
      if (left <= mark && left > mark - 5 && !spoken.has(mark)) {
        spoken.add(mark);
        announce.textContent = `${mark >= 60 ? `${mark / 60} minute${mark > 60 ? "s" : ""}` : `${mark} seconds`} left to pay.`;
      }
    }
    if (left === 0) {
      clearInterval(tick);
      say("Your hold expired and the seats were let go. Choose seats again.");
      onGone();
    }
  };
  const tick = setInterval(update, 1000);
  onLeave(() => clearInterval(tick));
  panel.replaceChildren(
    h("h2", { id: "checkout-title" }, "Your seats are held"),
    h("p", {}, `Seats ${hold.seats.join(", ")} — ${api.money(hold.total)}`),
    h("p", { class: "countdown" }, "Time left to pay: ", timer),
    announce, form, release);
  panel.hidden = false;
  update();
  card.focus();
}

// ---- Tickets --------------------------------------------------------------------------

export async function tickets(main, params) {
  if (!session.user) return go(`/login?next=${encodeURIComponent("/tickets")}`);
  // Just after paying, the ticket list (a read model a moment behind the payment) may not
  // show the new tickets yet: ask again for up to three seconds. New tickets are upcoming, so
  // they are on the first page unless fifty earlier ones come before them.
  const expected = (params.get("expect") || "").split(",").filter(Boolean);
  let page = { tickets: [] };
  for (let i = 0; i < 30; i++) {
    page = await api.get("/v1/users/me/tickets");
    if (expected.every((id) => page.tickets.some((t) => t.id === id))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  main.append(h("h1", {}, "My tickets"));
  if (!page.tickets.length) return main.append(h("p", {}, "No tickets yet. ", h("a", { href: "#/" }, "Find a movie")));
  const list = h("ul", { class: "tickets" }, page.tickets.map(ticketItem));
  main.append(list);
  if (page.next_after) main.append(moreTickets(list, page.next_after));
}

/** A button that adds the next page of tickets to `list`, from where the last one ended. */
function moreTickets(list, firstAfter) {
  let after = firstAfter;
  const more = h("button", { type: "button", class: "secondary", onclick: async () => {
    more.disabled = true;
    try {
      const next = await api.get(`/v1/users/me/tickets?after=${encodeURIComponent(after)}`);
      list.append(...next.tickets.map(ticketItem));
      after = next.next_after;
      if (after) more.disabled = false;
      else more.remove();
    } catch (err) {
      fail(err);
      more.disabled = false;
    }
  } }, "More tickets");
  return more;
}

function ticketItem(t) {
  return h("li", { class: `ticket status-${t.status}` },
    h("div", {},
      h("h2", {}, t.movie_title),
      h("p", {}, `${t.theater_name}, ${t.screen_name}`),
      h("p", {}, when(t.starts_at)),
      h("p", {}, `Seat ${t.seat} · ${api.money(t.price)}`),
      h("p", { class: "code" }, "Code ", h("strong", {}, t.code)),
      t.status === "refunded" ? h("p", { class: "warning" }, "Refunded: the showtime was cancelled.") : ""),
    qrSvg(t.code, `QR code of ticket ${t.code}, seat ${t.seat}`));
}

// ---- Accounts -------------------------------------------------------------------------

function afterSignIn(params) {
  const next = params.get("next");
  go(next && next.startsWith("/") ? next : "/");
}

export async function login(main, params) {
  const email = h("input", { name: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  main.append(h("h1", {}, "Log in"), h("form", { class: "narrow", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const t = await api.post("/v1/auth/token", { email: email.value, password: password.value });
      api.setToken(t.access_token);
      await refreshSession();
      afterSignIn(params);
    } catch (err) {
      fail(err.status === 401 ? new Error("Wrong email or password.") : err);
    }
  } }, field("Email", email), field("Password", password), h("button", { type: "submit" }, "Log in")),
  h("p", {}, "New here? ", h("a", { href: `#/register${params.get("next") ? api.query({ next: params.get("next") }) : ""}` }, "Register")));
}

export async function register(main, params) {
  const name = h("input", { name: "name", autocomplete: "name", required: true });
  const email = h("input", { name: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "new-password", minlength: 8, required: true });
  main.append(h("h1", {}, "Register"), h("form", { class: "narrow", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api.post("/v1/users", { name: name.value, email: email.value, password: password.value });
      const t = await api.post("/v1/auth/token", { email: email.value, password: password.value });
      api.setToken(t.access_token);
      await refreshSession();
      afterSignIn(params);
    } catch (err) {
      fail(err);
    }
  } }, field("Name", name), field("Email", email), field("Password", password, "At least 8 characters."),
  h("button", { type: "submit" }, "Create account")));
}
