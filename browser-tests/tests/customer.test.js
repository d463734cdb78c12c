// A customer finds a movie near a point, holds two seats, watches the countdown, pays with a
// declined card and then a good one, and finds the tickets with their QR codes. And what the
// checkout leaves behind: no card number in any table, one charge when an answer is lost.

import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, api, browser, catalog, playing, register, screenshot, storedRows, unique } from "./harness.js";

test("a customer finds a movie near them, holds two seats, pays after a declined card and sees the tickets", async () => {
  const [lat, lon] = [48.8566, 2.3522];
  const title = unique("Le Samouraï");
  const { showtime } = await catalog({ lat, lon, title });
  await playing(lat, lon, title);
  // Someone else already bought a seat, so the map shows one taken.
  const other = await api("POST", "/v1/users", { email: `other.${Date.now()}@example.com`, password: "password123", name: "Other" });
  const otherToken = (await api("POST", "/v1/auth/token", { email: other.email, password: "password123" })).access_token;
  const held = await api("POST", "/v1/reservations", { showtime_id: showtime.id, seats: ["C5"] }, otherToken);
  await api("POST", "/v1/tickets", { reservation_id: held.id, payment: { card_number: "4242424242424242" } }, otherToken);

  const b = await browser({ geolocation: { latitude: lat + 0.01, longitude: lon - 0.01 }, permissions: ["geolocation"] });
  const { page } = b;
  try {
    await register(page, "Ann Customer");
    await page.goto(`${BASE}/#/`);
    await page.getByRole("button", { name: "Use my location" }).click();
    await page.getByRole("link", { name: title }).waitFor();
    await page.getByRole("link", { name: title }).click();
    await page.locator(".showtime-link").first().click();

    // The seat map: every seat in place, with its kind, price and state in its name.
    const f = page.locator('[data-seat="C5"]');
    await assert.doesNotReject(f.waitFor());
    assert.equal(await f.getAttribute("aria-label"), "C5, premium, 18.00 EUR, sold");
    assert.equal(await page.locator('[data-seat="A1"]').getAttribute("aria-label"), "A1, standard, 12.50 EUR, available");
    assert.equal(await page.locator(".seat").count(), 32);

    // Keyboard: Tab to a seat, arrows move, Space picks it.
    await page.locator('[data-seat="C3"]').focus();
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.seat), "C4");
    await page.keyboard.press("Space");
    assert.equal(await page.locator('[data-seat="C4"]').getAttribute("aria-pressed"), "true");
    await page.locator('[data-seat="C6"]').click();
    await assert.doesNotReject(page.getByText("Selected: C4, C6 — 36.00 EUR").waitFor());
    await screenshot(page.locator(".map-area"), "seat-map");

    await page.getByRole("button", { name: "Hold 2 seats" }).click();
    const timer = page.getByRole("timer");
    await timer.waitFor();
    const first = await timer.textContent();
    assert.match(first, /^(7:00|6:5\d)$/);
    await page.waitForTimeout(1100);
    assert.notEqual(await timer.textContent(), first, "the countdown moves");
    assert.equal(await page.locator('[data-seat="C4"]').getAttribute("data-status"), "mine");

    await page.getByLabel("Card number").fill("4000 0000 0000 0002");
    await page.getByRole("button", { name: /^Pay/ }).click();
    await page.getByRole("alert").filter({ hasText: "Your card was declined" }).waitFor();
    assert.ok(await timer.isVisible(), "the hold stays after a decline");
    await screenshot(page, "checkout-declined");

    await page.getByLabel("Card number").fill("4242 4242 4242 4242");
    await page.getByRole("button", { name: /^Pay/ }).click();
    await page.getByRole("heading", { name: "My tickets" }).waitFor();
    const tickets = page.locator(".ticket");
    await tickets.first().waitFor();
    assert.equal(await tickets.count(), 2);
    assert.equal(await page.locator(".ticket svg.qr[role=img]").count(), 2);
    const text = await tickets.allTextContents();
    assert.ok(text.some((t) => t.includes("Seat C4")) && text.some((t) => t.includes("Seat C6")), text.join("\n"));
    await screenshot(page, "tickets");
    assert.deepEqual(b.problems, []);
  } finally {
    await b.close();
  }
});

test("card numbers typed at the checkout reach no table, and paying again after a lost answer pays once", async () => {
  const [lat, lon] = [45.764, 4.8357];
  const title = unique("Les Enfants du paradis");
  const { showtime } = await catalog({ lat, lon, title });
  await playing(lat, lon, title);
  const [declined, good] = ["4000000000000002", "4242424242424242"];

  const b = await browser();
  const { page } = b;
  const keys = [];
  page.on("request", (r) => {
    if (r.method() === "POST" && r.url().endsWith("/v1/tickets")) keys.push(r.headers()["idempotency-key"]);
  });
  try {
    await register(page, "Bea Customer");
    await page.goto(`${BASE}/#/showtime/${showtime.id}`);
    await page.locator('[data-seat="B3"]').click();
    await page.getByRole("button", { name: "Hold 1 seat" }).click();
    await page.getByRole("timer").waitFor();
    const pay = page.getByRole("button", { name: /^Pay/ });

    await page.getByLabel("Card number").fill(declined.replace(/(\d{4})(?!$)/g, "$1 "));
    await pay.click();
    await page.getByRole("alert").filter({ hasText: "Your card was declined" }).waitFor();

    // The good card is charged, but the answer is lost on its way back to the page.
    await page.route("**/v1/tickets", async (route) => {
      await route.fetch();
      await route.abort("connectionreset");
    }, { times: 1 });
    await page.getByLabel("Card number").fill(good);
    await pay.click();
    await page.getByRole("alert").filter({ hasText: "The server cannot be reached" }).waitFor();
    const again = page.waitForRequest((r) => r.method() === "POST" && r.url().endsWith("/v1/tickets"));
    await pay.click();
    await again;
    assert.equal(keys.length, 3, keys.join(", "));
    assert.notEqual(keys[1], keys[0], "another card after a decline is a new attempt with a new key");
    assert.equal(keys[2], keys[1], "paying again after a lost answer reuses the attempt's key");
    // The same key gets the first payment's answer back: the tickets, not "already paid".
    await page.getByRole("heading", { name: "My tickets" }).waitFor();
    await page.locator(".ticket").first().waitFor();
    assert.equal(await page.locator(".ticket").count(), 1);

    // Every table, read as pg_dump writes it: text as is, bytea as hex.
    const tables = storedRows();
    assert.ok((tables.get("public.idempotency_keys") || "").includes(keys[1]), "the dump holds the payment's key");
    for (const number of [declined, good]) {
      const forms = [number, number.replace(/(\d{4})(?!$)/g, "$1 "), Buffer.from(number).toString("hex")];
      for (const [table, rows] of tables) {
        for (const form of forms) assert.ok(!rows.includes(form), `${table} holds the card number ${number} (as ${form})`);
      }
    }
    assert.deepEqual(b.problems.filter((p) => !p.includes("ERR_CONNECTION_RESET")), []);
  } finally {
    await b.close();
  }
});
