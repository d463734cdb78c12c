// An admin creates a theater with a seat layout (previewed as customers will see it), a
// movie and a showtime; a second showtime on the busy screen is refused with the reason;
// the admin cancels the first.

import { test } from "node:test";
import assert from "node:assert/strict";
import { ADMIN, BASE, browser, screenshot, unique } from "./harness.js";

test("an admin creates a theater with a layout, a movie and a showtime, sees the overlap error and cancels", async () => {
  const b = await browser();
  const { page } = b;
  page.on("dialog", (d) => d.accept());
  try {
    await page.goto(`${BASE}/#/login?next=/admin`);
    await page.getByLabel("Email").fill(ADMIN.email);
    await page.getByLabel("Password").fill(ADMIN.password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("heading", { name: "New theater" }).waitFor();

    const name = unique("Odeon");
    await page.getByLabel("Name", { exact: true }).first().fill(name);
    await page.getByLabel("Address").fill("1 Leicester Sq");
    await page.getByLabel("City").fill("London");
    await page.getByLabel("Latitude").fill("51.5103");
    await page.getByLabel("Longitude").fill("-0.1301");
    await page.getByLabel("Time zone").fill("Europe/London");
    await page.getByLabel("Seat layout").fill("sss.sss\nsss.sss\nppp.ppp\nwc.....");
    await page.getByText("4 rows, 20 seats (12 standard, 6 premium, 1 wheelchair, 1 companion).").waitFor();
    assert.equal(await page.locator(".preview .seat").count(), 20);
    assert.equal(await page.locator('.preview [data-seat="C4"]').getAttribute("aria-label"), "C4, premium, available");
    await screenshot(page.locator("#theater-form"), "admin-layout-editor");
    await page.getByRole("button", { name: "Add theater" }).click();
    await page.getByRole("alert").filter({ hasText: `Theater “${name}” added` }).waitFor();

    const title = unique("Brief Encounter");
    await page.getByRole("link", { name: "Movies" }).click();
    await page.getByLabel("Title").fill(title);
    await page.getByLabel("Runtime (minutes)").fill("86");
    await page.getByRole("button", { name: "Add movie" }).click();
    await page.getByRole("alert").filter({ hasText: `Movie “${title}” added` }).waitFor();

    await page.getByRole("link", { name: "Showtimes" }).click();
    await page.getByLabel("Movie").selectOption({ label: title });
    await page.getByLabel("Theater").selectOption({ label: `${name}, London` });
    const tomorrow = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
    await page.getByLabel("Starts at").fill(`${tomorrow}T20:00`);
    await page.getByLabel("standard price").fill("11.00");
    await page.getByRole("button", { name: "Schedule showtime" }).click();
    await page.getByRole("alert").filter({ hasText: "Showtime scheduled" }).waitFor();

    // The same screen half an hour later overlaps: the API's screen-busy answer is shown.
    await page.getByLabel("Starts at").fill(`${tomorrow}T20:30`);
    await page.getByRole("button", { name: "Schedule showtime" }).click();
    await page.getByRole("alert").filter({ hasText: "That screen is busy then" }).waitFor();

    const row = page.locator(".admin-list li").filter({ hasText: title });
    await row.getByRole("button", { name: "Cancel showtime" }).click();
    await page.getByRole("alert").filter({ hasText: "Showtime cancelled" }).waitFor();
    await page.locator(".admin-list li").filter({ hasText: "cancelled" }).first().waitFor();
    assert.deepEqual(b.problems, []);
  } finally {
    await b.close();
  }
});
