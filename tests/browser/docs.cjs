// A developer opens /docs in headless Chromium: Swagger UI renders the API from
// /openapi.json, they authorize with their API key, open `GET /v1/tenant`, try it out, and
// read the answer.
// Usage: node docs.cjs BASE_URL API_KEY
// Prints one JSON line: {operations (how many the page lists), sections (tag names), status
// (the tried call's, as the page shows it), body (its first characters), foreign (requests to
// any other origin), error}.
const { launch } = require("./chromium.cjs");

(async () => {
const [base, apiKey] = process.argv.slice(2);
const browser = await launch();
const result = { operations: 0, sections: [], status: null, body: null, foreign: [], error: null };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20000);
  page.on("request", (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith("data:")) result.foreign.push(r.url());
  });
  await page.goto(base + "/docs");
  await page.waitForSelector(".opblock", { timeout: 30000 });
  // Swagger UI renders a large document's operations as they scroll into view: scroll
  // through it, collecting each operation (method and path) and section once.
  const seen = new Set();
  const sections = new Set();
  let last = -1;
  for (let i = 0; i < 400; i++) {
    for (const op of await page.$$eval(".opblock", (els) => els.map((e) => {
      const path = e.querySelector("[data-path]");
      return (e.className.match(/opblock-(get|post|put|patch|delete|head|options)/) || [])[1] + " " + (path ? path.dataset.path : "");
    }))) seen.add(op);
    for (const t of await page.locator(".opblock-tag-section h3 .nostyle span").allTextContents()) sections.add(t);
    const y = await page.evaluate(() => { window.scrollBy(0, window.innerHeight / 2); return window.scrollY; });
    if (y === last) break;
    last = y;
    await new Promise((r) => setTimeout(r, 50));
  }
  result.operations = seen.size;
  result.sections = [...sections];
  await page.evaluate(() => window.scrollTo(0, 0));
  // Authorize with the API key (the spec's bearer scheme).
  await page.click("button.authorize");
  const scheme = page.locator(".modal-ux .auth-container").filter({ hasText: "api_key" }).first();
  await scheme.locator("input").fill(apiKey);
  await scheme.locator("button.authorize").click();
  await page.locator(".modal-ux button.close-modal").first().click();
  // GET /v1/tenant: open it, try it out, execute.
  const op = page.locator(".opblock-get").filter({ has: page.locator('[data-path="/v1/tenant"]') }).first();
  for (let i = 0; i < 200 && (await op.count()) === 0; i++) {
    await page.evaluate(() => window.scrollBy(0, window.innerHeight / 2));
    await new Promise((r) => setTimeout(r, 50));
  }
  await op.locator(".opblock-summary").first().click();
  await op.locator("button.try-out__btn").click();
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table tbody .response-col_status").first();
  await status.waitFor();
  result.status = (await status.textContent()).trim();
  result.body = ((await op.locator(".live-responses-table .microlight").first().textContent()) || "").slice(0, 300);
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
