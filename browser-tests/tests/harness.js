// What every browser test needs: Debian's Chromium started the way this machine requires,
// the engine's address, an API client for setting up data, and screenshots for the docs.

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BASE = process.env.MARQUEE_URL || "http://127.0.0.1:8080";
export const ADMIN = {
  email: process.env.MARQUEE_ADMIN_EMAIL || "admin@browser.test",
  password: process.env.MARQUEE_ADMIN_PASSWORD || "browser-admin-password",
};

// Without the background-networking flags Chromium keeps calling Google's hosts, which this
// kind of machine's closed network refuses.
const FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** A fresh Chromium with its own empty profile; `close()` also removes the profile. */
export async function browser(options = {}) {
  const profile = mkdtempSync(join(tmpdir(), "marquee-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 1200, height: 900 },
    ...options,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(10000);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // Chromium logs every 4xx answer as a console error; the tests provoke those on purpose
  // (a declined card, a busy screen), so only other errors count.
  const expected = /^Failed to load resource: the server responded with a status of 4\d\d/;
  page.on("console", (m) => {
    if (m.type() === "error" && !expected.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return {
    context, page, problems,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Calls the API directly (test setup only: the pages never get a back door). */
export async function api(method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(BASE + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export async function adminToken() {
  return (await api("POST", "/v1/auth/token", ADMIN)).access_token;
}

export function unique(prefix) {
  return `${prefix} ${Math.random().toString(36).slice(2, 8)}`;
}

/** A theater at a point, a movie and a showtime tomorrow evening; returns their ids. */
export async function catalog({ lat, lon, title, layout }) {
  const admin = await adminToken();
  const theater = await api("POST", "/v1/theaters", {
    name: unique("Roxy"), address: "12 Main St", city: "Springfield", location: { lat, lon },
    timezone: "Europe/Paris",
    screens: [{ name: "Screen 1", layout: layout || ["ss.ssss.ss", "ss.ssss.ss", "pp.pppp.pp", "ww.cccc.ww"] }],
  }, admin);
  const movie = await api("POST", "/v1/movies", { title, runtime_minutes: 120, genres: ["drama"], rating: "PG-13" }, admin);
  const starts = new Date(Date.now() + 86400000);
  starts.setUTCHours(19, 0, 0, 0);
  const eur = (amount) => ({ amount, currency: "EUR" });
  const showtime = await api("POST", "/v1/showtimes", {
    movie_id: movie.id, theater_id: theater.id, screen_id: theater.screens[0].id, starts_at: starts.toISOString(),
    prices: { standard: eur(1250), premium: eur(1800), wheelchair: eur(1250), companion: eur(1250) },
  }, admin);
  return { admin, theater, movie, showtime };
}

/** Waits until the read models show a showtime (they follow the event stream). */
export async function playing(lat, lon, title) {
  for (let i = 0; i < 100; i++) {
    const found = await api("GET", `/v1/movies?lat=${lat}&lon=${lon}`);
    if (found.movies.some((m) => m.title === title)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${title} never showed up near ${lat},${lon}`);
}

/** Registers a customer through the pages and leaves them signed in. */
export async function register(page, name) {
  const email = `${name.toLowerCase().replace(/\W+/g, "")}.${Date.now()}@example.com`;
  await page.goto(`${BASE}/#/register`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("correct horse battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();
  return email;
}

/** Saves a screenshot into docs/ when MARQUEE_SCREENSHOTS names the folder. */
export async function screenshot(target, name) {
  const dir = process.env.MARQUEE_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await target.screenshot({ path: join(dir, `${name}.png`) });
}

/** Every row of every table of the engine's database, as `pg_dump --data-only` writes them,
 *  by table ("public.tickets"); what precedes the first table is under "". Read-only. */
export function storedRows() {
  const url = process.env.MARQUEE_DATABASE_URL;
  if (!url) throw new Error("MARQUEE_DATABASE_URL must name the engine's database (scripts/browser-test sets it)");
  const dump = execFileSync("pg_dump", ["--data-only", "--no-owner", "--dbname", url],
    { encoding: "utf8", maxBuffer: 1 << 28 });
  const tables = new Map();
  for (const section of dump.split(/^(?=COPY )/m)) {
    tables.set(section.startsWith("COPY ") ? section.split(" ")[1] : "", section);
  }
  return tables;
}
