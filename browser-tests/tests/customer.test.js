// A customer finds a movie near a point, holds two seats, watches the countdown, pays with a
// declined card and then a good one, and finds the tickets with their QR codes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, api, browser, catalog, playing, register, screenshot, unique } from "./harness.js";

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
