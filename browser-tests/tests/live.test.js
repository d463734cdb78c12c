// Two browsers on one seat map: a seat one customer holds greys out in the other browser
// within a second, without a reload.

import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, browser, catalog, register, unique } from "./harness.js";

test("a seat held in one browser shows as taken in another within a second, without reloading", async () => {
  const { showtime } = await catalog({ lat: 52.52, lon: 13.405, title: unique("Wings of Desire") });
  const ann = await browser();
  const bob = await browser();
  try {
    await register(ann.page, "Ann Watcher");
    for (const { page } of [ann, bob]) {
      await page.goto(`${BASE}/#/showtime/${showtime.id}`);
      await page.getByText("Live: seats update as others book.").waitFor();
    }
    await bob.page.evaluate(() => { window.notReloaded = true; });
    const seat = bob.page.locator('[data-seat="B2"]');
    assert.equal(await seat.getAttribute("data-status"), "available");

    await ann.page.locator('[data-seat="B2"]').click();
    await ann.page.getByRole("button", { name: "Hold 1 seat" }).click();
    await ann.page.getByRole("timer").waitFor();
    const held = Date.now();
    await bob.page.waitForFunction(() => document.querySelector('[data-seat="B2"]').dataset.status === "held", null, { timeout: 1000 });
    const took = Date.now() - held;

    assert.ok(took < 1000, `took ${took} ms`);
    assert.equal(await seat.getAttribute("aria-label"), "B2, standard, 12.50 EUR, held");
    assert.equal(await seat.getAttribute("aria-disabled"), "true");
    assert.equal(await bob.page.evaluate(() => window.notReloaded), true);

    // Ann lets it go: Bob sees it free again.
    await ann.page.getByRole("button", { name: "Let the seats go" }).click();
    await bob.page.waitForFunction(() => document.querySelector('[data-seat="B2"]').dataset.status === "available", null, { timeout: 2000 });
    assert.deepEqual([...ann.problems, ...bob.problems], []);
  } finally {
    await ann.close();
    await bob.close();
  }
});
