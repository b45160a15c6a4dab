// A creator opens the server's root in headless Chromium: lands on the sign-in page (with a
// link to /docs), is refused with a wrong key, signs in with a tenant API key, makes a live
// stream and sees it listed with its RTMP URL and stream key, signs out, and finds that an
// unknown player link says so.
// Usage: node dashboard.cjs BASE_URL API_KEY SCREENSHOT_DIR
// Prints one JSON line with what the page showed.
const { launch } = require("./chromium.cjs");

(async () => {
const [base, apiKey, shots] = process.argv.slice(2);
const browser = await launch();
const result = {
  landing: null, docsLinks: 0, refused: null, tenant: null, cookie: null, scriptCookies: null,
  rows: 0, rtmp: null, streamKey: null, signedOut: false, notFound: null, problems: [], error: null,
};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("console", (m) => { if (m.type() === "error") result.problems.push(m.text()); });
  page.on("pageerror", (e) => result.problems.push(String(e)));
  await page.goto(base + "/");
  result.landing = new URL(page.url()).pathname;
  result.docsLinks = await page.locator('a[href="/docs"]').count();
  await page.fill("#api_key", "fck_not_a_key");
  await page.click("button[type=submit]");
  result.refused = (await page.locator(".error").textContent()).trim();
  await page.screenshot({ path: shots + "/sign-in.png" });
  // Console errors so far are the refused sign-in's 401: only later ones count.
  result.problems = [];
  await page.fill("#api_key", apiKey);
  await page.click("button[type=submit]");
  await page.waitForSelector("#tenant");
  result.tenant = await page.locator("#tenant").textContent();
  const cookie = (await context.cookies()).find((c) => c.name === "ferrocast_session");
  result.cookie = cookie ? { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite } : null;
  result.scriptCookies = await page.evaluate(() => document.cookie);
  await page.evaluate(() => window.dashboard.ready);
  await page.click("#create-stream");
  await page.waitForSelector("#streams tbody tr");
  result.rows = await page.locator("#streams tbody tr").count();
  result.rtmp = await page.locator("#streams tbody tr td:nth-child(3) code").first().textContent();
  result.streamKey = await page.locator("#streams tbody tr td:nth-child(4) code").first().textContent();
  await page.screenshot({ path: shots + "/dashboard.png", fullPage: true });
  await page.click("#logout");
  await page.waitForSelector("#api_key");
  result.signedOut = (await context.cookies()).every((c) => c.name !== "ferrocast_session");
  // The not-found page below answers 404 on purpose: the console is not watched for it.
  page.removeAllListeners("console");
  await page.goto(base + "/play/0123456789abcdef0123456789abcdef");
  result.notFound = await page.locator("#not-found").textContent();
  await page.screenshot({ path: shots + "/play-not-found.png" });
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
