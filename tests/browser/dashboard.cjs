// A creator opens the server's root in headless Chromium: lands on the sign-in page (with a
// link to /docs), is refused with a wrong key, signs in with a tenant API key, makes a live
// stream and sees it listed with its RTMP URL and stream key, and turns on its chat's slow
// mode; uploads FILE through the
// Uploads tab (tus in the page: its progress events are reported) and waits for the asset to
// be ready; watches it for a few seconds on its player page, writes CONTROL_DIR/played and
// waits for CONTROL_DIR/flushed (the test writes the analytics out); opens Analytics and
// reads the views chart; creates a product with a price for the asset and a discount code in
// Commerce; makes a signing key in Settings (its private key is shown once); signs out, and finds that an unknown player link says so.
// Usage: node dashboard.cjs BASE_URL API_KEY SCREENSHOT_DIR FILE CONTROL_DIR
// Prints one JSON line with what the page showed.
const { launch } = require("./chromium.cjs");

(async () => {
const fs = require("fs");
const [base, apiKey, shots, file, control] = process.argv.slice(2);
// Opens a tab and waits for its data: the click changes the URL's fragment, and the page
// loads the tab on the hashchange that follows.
async function openTab(page, name) {
  await page.click(`nav.tabs a[data-tab="${name}"]`);
  await page.waitForFunction((n) => window.dashboard.loaded && window.dashboard.loaded[n], name);
  const ok = await page.evaluate((n) => window.dashboard.loaded[n], name);
  if (!ok) throw new Error(`the ${name} tab did not load: ` + await page.locator("#error").textContent());
}

async function waitFile(path, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fs.existsSync(path)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no " + path);
}
const browser = await launch();
const result = {
  landing: null, docsLinks: 0, refused: null, tenant: null, cookie: null, scriptCookies: null,
  rows: 0, rtmp: null, streamKey: null, progress: [], ready: null, played: null, chartPoints: null,
  cards: null, product: null, code: null, settings: null, signingKeyShown: false, signingKeys: 0, signedOut: false, notFound: null, problems: [], error: null,
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
  // The stream's chat: slow mode on.
  await page.click('#streams tbody tr button:has-text("Chat")');
  await page.waitForSelector("#chat-panel:not([hidden])");
  await page.fill("#chat-slow", "5");
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/chat/rules") && r.request().method() === "PUT"),
    page.click('#chat-rules-form button[type="submit"]'),
  ]);
  await page.screenshot({ path: shots + "/dashboard.png", fullPage: true });

  // Uploads: a file through the page, then processing until ready.
  await openTab(page, "uploads");
  await page.setInputFiles("#file", file);
  await page.waitForFunction(() => window.dashboard.uploaded === 1, null, { timeout: 60000 });
  result.progress = await page.evaluate(() => window.dashboard.progress);
  const ready = page.locator('#assets tbody tr[data-status="ready"]');
  await ready.waitFor({ timeout: 120000 });
  result.ready = await ready.locator("td:nth-child(5) a").textContent();
  await page.waitForFunction(() => { const i = document.querySelector("#assets img.thumb"); return i && i.complete && i.naturalWidth > 0; });
  await page.screenshot({ path: shots + "/dashboard-uploads.png", fullPage: true });

  // A viewer watches it for a few seconds.
  const viewer = await context.newPage();
  await viewer.goto(`${base}/play/${result.ready}`);
  await viewer.waitForFunction(() => window.player && window.player.startupMs !== null, null, { timeout: 30000 });
  await new Promise((r) => setTimeout(r, 3000));
  result.played = await viewer.evaluate(() => window.player.state);
  await viewer.goto("about:blank");
  await viewer.close();
  fs.writeFileSync(control + "/played", "");
  await waitFile(control + "/flushed", 30000);

  // Analytics: the view on the chart.
  await openTab(page, "analytics");
  await page.waitForSelector("#views-chart canvas");
  result.chartPoints = Number(await page.locator("#views-chart").getAttribute("data-points"));
  result.cards = await page.locator("#cards").innerText();
  await page.screenshot({ path: shots + "/dashboard-analytics.png", fullPage: true });

  // Commerce: a product with a price, for the asset.
  await openTab(page, "commerce");
  await page.fill("#product-name", "Director's cut");
  await page.fill("#product-playback-ids", result.ready);
  await page.fill("#product-amount", "4.99");
  await page.click('#product-form button[type="submit"]');
  await page.waitForSelector("#products tbody tr");
  result.product = await page.locator("#products tbody tr").first().innerText();
  await page.fill("#code-code", "LAUNCH20");
  await page.fill("#code-percent", "20");
  await page.click('#code-form button[type="submit"]');
  await page.waitForSelector("#codes tbody tr");
  result.code = await page.locator("#codes tbody tr").first().innerText();
  await page.screenshot({ path: shots + "/dashboard-commerce.png", fullPage: true });

  await openTab(page, "settings");
  result.settings = await page.locator("#keys tbody tr").count();
  await page.click("#create-signing-key");
  await page.waitForSelector("#secret:not([hidden])");
  result.signingKeyShown = (await page.locator("#secret-value").textContent()).includes("BEGIN PRIVATE KEY");
  // The list is read again after the secret shows.
  await page.waitForSelector("#signing-keys tbody tr");
  result.signingKeys = await page.locator("#signing-keys tbody tr").count();
  await page.screenshot({ path: shots + "/dashboard-settings.png", fullPage: true });
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
