// Drawing a seat map (customers pick seats on it; admins preview a layout with it) and
// keeping it live from the server's event stream.
//
// Every seat is a real <button> placed in a CSS grid at its layout column, so aisles are
// empty grid cells, the screen is drawn at the front, Tab reaches the map and the arrow keys
// move between seats, and each seat's accessible name says everything a sighted customer
// sees: "F7, standard, 12.50 EUR, available".

import { money } from "./api.js";

const KIND_LETTERS = { s: "standard", p: "premium", w: "wheelchair", c: "companion" };

/** A seat map (the API's shape) from admin layout strings, every seat available. */
export function mapOfLayout(layout) {
  const rows = [];
  layout.forEach((line, r) => {
    const name = String.fromCharCode(65 + r);
    let number = 0;
    const seats = [];
    [...line].forEach((ch, column) => {
      if (!KIND_LETTERS[ch]) return;
      number += 1;
      seats.push({ seat: `${name}${number}`, kind: KIND_LETTERS[ch], status: "available", column });
    });
    rows.push({ row: name, seats });
  });
  return { rows };
}

function label(seat, status, mine) {
  const state = mine ? "held by you" : status;
  return [seat.seat, seat.kind, money(seat.price), state].filter(Boolean).join(", ");
}

/**
 * Draws `map` into `container`. With `onToggle`, available seats can be picked; `selected`
 * (a Set of labels) marks the picked ones. Returns `{ setStatus(seat, status), seats }`.
 */
export function drawSeatMap(container, map, { onToggle, selected = new Set(), mine = new Set() } = {}) {
  container.replaceChildren();
  container.classList.add("seatmap");
  const columns = Math.max(1, ...map.rows.flatMap((r) => r.seats.map((s) => s.column + 1)));
  container.style.setProperty("--columns", columns);

  const screen = document.createElement("div");
  screen.className = "screen";
  screen.textContent = "Screen";
  screen.setAttribute("aria-hidden", "true");
  container.append(screen);

  const buttons = new Map();
  const info = new Map();
  for (const row of map.rows) {
    const line = document.createElement("div");
    line.className = "seat-row";
    line.setAttribute("role", "group");
    line.setAttribute("aria-label", `Row ${row.row}`);
    const name = document.createElement("span");
    name.className = "row-name";
    name.textContent = row.row;
    name.setAttribute("aria-hidden", "true");
    line.append(name);
    for (const seat of row.seats) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `seat kind-${seat.kind}`;
      b.dataset.seat = seat.seat;
      b.style.gridColumn = String(seat.column + 2);
      b.textContent = seat.seat.slice(row.row.length);
      if (seat.mine) mine.add(seat.seat);
      info.set(seat.seat, seat);
      buttons.set(seat.seat, b);
      if (onToggle) {
        b.addEventListener("click", () => {
          if (b.getAttribute("aria-disabled") === "true") return;
          onToggle(seat.seat);
        });
      } else {
        b.tabIndex = -1;
      }
      line.append(b);
    }
    container.append(line);
  }

  function setStatus(seatLabel, status) {
    const b = buttons.get(seatLabel);
    const seat = info.get(seatLabel);
    if (!b) return;
    seat.status = status;
    const isMine = mine.has(seatLabel) && status === "held";
    const picked = selected.has(seatLabel);
    b.dataset.status = isMine ? "mine" : status;
    b.setAttribute("aria-pressed", String(picked || isMine));
    b.setAttribute("aria-disabled", String(status !== "available" && !isMine));
    b.setAttribute("aria-label", label(seat, status, isMine));
    b.title = b.getAttribute("aria-label");
  }
  for (const seat of info.values()) setStatus(seat.seat, seat.status);

  container.onkeydown = (e) => arrowKeys(e, container);
  return { setStatus, seats: info, refresh: () => info.forEach((s) => setStatus(s.seat, s.status)) };
}

/** Arrow keys move the focus to the nearest seat in that direction. */
function arrowKeys(e, container) {
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  const move = moves[e.key];
  const current = e.target.closest(".seat");
  if (!move || !current) return;
  e.preventDefault();
  const rows = [...container.querySelectorAll(".seat-row")];
  const rowIndex = rows.indexOf(current.parentElement);
  const col = Number(current.style.gridColumn);
  const targetRow = rows[rowIndex + move[1]];
  if (!targetRow) return;
  const candidates = [...targetRow.querySelectorAll(".seat")];
  let best;
  if (move[0] !== 0) {
    const side = candidates.filter((b) => Math.sign(Number(b.style.gridColumn) - col) === move[0]);
    best = side.sort((a, b) => Math.abs(a.style.gridColumn - col) - Math.abs(b.style.gridColumn - col))[0];
  } else {
    best = candidates.sort((a, b) => Math.abs(a.style.gridColumn - col) - Math.abs(b.style.gridColumn - col))[0];
  }
  if (best) best.focus();
}

/**
 * Follows `GET /v1/showtimes/{id}/seats/stream`. `onSnapshot(map)` on connecting (and on
 * every reconnection: the browser reconnects by itself), `onSeat({seat, status})` per change,
 * `onCancelled()`, `onConnection(bool)`. Returns a function that stops following.
 */
export function followSeats(showtimeId, { onSnapshot, onSeat, onCancelled, onConnection }) {
  const source = new EventSource(`/v1/showtimes/${encodeURIComponent(showtimeId)}/seats/stream`);
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("seat", (e) => onSeat(JSON.parse(e.data)));
  source.addEventListener("cancelled", () => onCancelled && onCancelled());
  source.onopen = () => onConnection && onConnection(true);
  source.onerror = () => onConnection && onConnection(false);
  return () => source.close();
}
