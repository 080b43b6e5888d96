// End-to-end check of the dashboard in headless Debian chromium, driven by the Python test over stdin/stdout.
// Usage: node dashboard.mjs <base url> <api key> <screenshot path>
// The key is given as HTTP Basic credentials (Playwright answers the page's Basic challenge; chromium then
// sends them with the page's own fetch and EventSource requests, as for a person who typed it in the
// browser's prompt). Prints "READY" once the page is loaded with the live stream connected; then reads one JSON line on stdin
// ({station, other, otherZone, silencedAlert}), waits for the station's exceedance alert to appear live, acknowledges it,
// waits for the acknowledged state, then for the clear hold the test starts, reads the triage view (groups by station, rule and basis in words, rounded values,
// anomaly score apart), tries the severity, zone and rule filters, opens the suppressed count, draws the COD chart
// while the other parameters' readings answer late, takes a screenshot
// and prints one JSON line with what it saw.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [url, key, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "quantrac-chromium-"));
// A fresh profile directory each run (Playwright passes it to chromium as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  httpCredentials: { username: "duty-officer", password: key, origin: new URL(url).origin },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { errors: [] };
let lines = null;
/* stdin stays open until the readline interface is closed: closed in `finally`, so a step that fails still lets
   node exit and print its result, with the error in it */
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(url)) external.push(r.url()); });
  const response = await page.goto(url + "/");
  result.pageStatus = response.status();
  await page.waitForSelector("#stream-state.live", { timeout: 20000 });
  result.titleVi = await page.textContent("header h1");
  console.log("READY");
  lines = createInterface({ input: process.stdin });
  const setup = JSON.parse((await lines[Symbol.asyncIterator]().next()).value);
  const stationId = setup.station;
  const row = page.locator(`#alerts tbody tr.alert[data-station-id="${stationId}"][data-rule="exceedance"]`);
  await row.waitFor({ timeout: 20000 });
  result.alertId = await row.getAttribute("data-alert-id");
  result.rowBefore = await row.textContent();
  await row.locator("button.ack").click();
  await page.waitForSelector(`#alerts tbody tr.acknowledged[data-alert-id="${result.alertId}"]`, { timeout: 20000 });
  result.rowAfter = await page.locator(`#alerts tbody tr[data-alert-id="${result.alertId}"]`).textContent();
  await page.click("#lang-toggle");
  result.titleEn = await page.textContent("header h1");
  // The test clears the alert's condition once it is acknowledged: the clear hold's start arrives live.
  const clearing = page.locator(`#alerts tbody tr[data-alert-id="${result.alertId}"] .clearing`);
  await clearing.waitFor({ timeout: 20000 });
  result.statusClearing = await page.locator(`#alerts tbody tr[data-alert-id="${result.alertId}"] td`).nth(5).textContent();
  const rowsOf = (sel) => page.locator(sel).evaluateAll((els) => els.map((e) => ({
    station: e.dataset.stationId, rule: e.dataset.rule, severity: [...e.classList].find((c) => ["critical", "warning"].includes(c)),
    cells: [...e.cells].map((c) => c.textContent) })));
  result.groups = await page.locator("#alerts tbody tr.group").evaluateAll((els) => els.map((e) => e.dataset.stationId));
  result.grouped = await page.locator("#alerts tbody tr").evaluateAll((els) => {
    let current = null;
    return els.every((e) => (e.classList.contains("group") ? ((current = e.dataset.stationId), true) : e.dataset.stationId === current));
  });
  result.stationRows = await rowsOf(`#alerts tbody tr.alert[data-station-id="${stationId}"]`);
  result.otherRows = await rowsOf(`#alerts tbody tr.alert[data-station-id="${setup.other}"]`);
  result.wideRows = await rowsOf(`#alerts tbody tr.alert[data-station-id="${setup.wide}"]`);
  await page.selectOption("#f-rule", "anomaly_spike");
  result.byRule = await rowsOf("#alerts tbody tr.alert");
  await page.selectOption("#f-rule", "");
  await page.selectOption("#f-zone", setup.otherZone);
  result.byZone = await page.locator("#alerts tbody tr.group").evaluateAll((els) => els.map((e) => e.dataset.stationId));
  await page.selectOption("#f-zone", "");
  await page.selectOption("#f-severity", "warning");
  result.bySeverity = await rowsOf("#alerts tbody tr.alert");
  await page.selectOption("#f-severity", "");
  const silenced = page.locator(`#suppressed li[data-alert-id="${setup.silencedAlert}"]`);
  await silenced.waitFor({ state: "attached", timeout: 20000 });
  result.suppressedVisibleBefore = await silenced.isVisible();
  await page.click("#suppressed summary");
  result.suppressedSummary = await page.textContent("#suppressed summary");
  result.suppressedItem = await silenced.textContent();
  result.suppressedVisibleAfter = await silenced.isVisible();
  await page.waitForSelector("#zones .station", { timeout: 20000 });
  result.zones = await page.locator("#zones .zone").count();
  const refused = page.locator(`#zones .station[data-station-id="${stationId}"] .refused`);
  await refused.waitFor({ state: "attached", timeout: 20000 });
  result.refused = await refused.textContent();
  result.refusedTitle = await refused.getAttribute("title");
  result.refusedElsewhere = await page.locator(`#zones .station[data-station-id="${setup.other}"] .refused`).count();
  // Another parameter's readings answer late, as they can on a loaded host: the chart must still show the
  // selection made last (COD), not whichever response came back last.
  const late = [];
  const isLate = (u) => u.pathname.endsWith("/readings") && new URL(u).searchParams.get("parameter") !== "COD";
  await page.route((u) => isLate(u), (route) => { late.push(route.request()); setTimeout(() => route.continue(), 1500); });
  await page.selectOption("#chart-station", stationId);
  await page.selectOption("#chart-parameter", "COD");
  await page.waitForSelector("#chart svg polyline", { timeout: 20000 });
  result.lateRequests = late.length;
  await Promise.all(late.map((r) => r.response().then((res) => res?.finished())));
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  result.chartAfterLate = await page.locator("#chart svg polyline").count();
  result.chartPoints = result.chartAfterLate
    ? (await page.getAttribute("#chart svg polyline", "points")).trim().split(" ").length : 0;
  result.limitLines = await page.locator("#chart svg line.limit").count();
  await page.screenshot({ path: screenshot, fullPage: true });
  result.external = external;
} catch (e) {
  result.errors.push(String(e));
} finally {
  lines?.close();
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
  console.log(JSON.stringify(result));
}
