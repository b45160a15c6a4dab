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
  result.operations = await page.locator(".opblock").count();
  result.sections = await page.locator(".opblock-tag-section h3 .nostyle span").allTextContents();
  // Authorize with the API key (the spec's bearer scheme).
  await page.click("button.authorize");
  const scheme = page.locator(".modal-ux .auth-container").filter({ hasText: "api_key" }).first();
  await scheme.locator("input").fill(apiKey);
  await scheme.locator("button.authorize").click();
  await page.locator(".modal-ux button.close-modal").first().click();
  // GET /v1/tenant: open it, try it out, execute.
  const op = page.locator(".opblock-get").filter({ has: page.locator('[data-path="/v1/tenant"]') }).first();
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
