// Two viewers open a live stream's player page in two browser contexts of headless Chromium
// and chat beside the video: A is a moderator (its token names a viewer the creator made a
// moderator), B is anonymous.
// Usage: node chat.cjs PLAYER_URL_A PLAYER_URL_B SCREENSHOT_DIR
// 1. both join; B sends a message with <script> and <img onerror> in it; A must see it as
//    text within 1 s (the time is reported);
// 2. A clicks the message's Hide button; it must vanish from both pages;
// 3. B floods: the page shows the server's "slow down".
// Prints one JSON line.
const { launch } = require("./chromium.cjs");

(async () => {
const [urlA, urlB, shots] = process.argv.slice(2);
const browser = await launch();
const result = {
  names: [], moderator: null, seenText: null, seenHtml: null, latencyMs: null, pwned: null, hiddenFrom: 0,
  floodStatus: null, errors: [], problems: [], error: null,
};
try {
  const pages = [];
  for (const url of [urlA, urlB]) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 620 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    page.on("pageerror", (e) => result.problems.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => window.chat && window.chat.connected && window.chat.name);
    result.names.push(await page.evaluate(() => window.chat.name));
    pages.push(page);
  }
  const [a, b] = pages;
  result.moderator = await a.evaluate(() => window.chat.moderator);
  const text = `<script>window.pwned=1</script> hello <img src=x onerror="window.pwned=2">`;
  await b.fill("#chat-text", text);
  const before = Date.now();
  await b.click("#chat-form button");
  const item = a.locator("#chat-messages li").last();
  await item.waitFor();
  result.latencyMs = Date.now() - before;
  result.seenText = await item.locator(".text").textContent();
  result.seenHtml = await item.locator(".text").innerHTML();
  result.pwned = await a.evaluate(() => window.pwned === undefined ? null : window.pwned);
  const id = await item.getAttribute("data-id");
  await item.hover();
  await a.screenshot({ path: shots + "/player-chat.png" });
  await item.locator('button[data-action="hide"]').click();
  for (const p of pages) {
    await p.waitForFunction((id) => !document.querySelector(`#chat-messages [data-id="${id}"]`), id);
    result.hiddenFrom += 1;
  }
  for (let i = 0; i < 4; i++) {
    await b.fill("#chat-text", "flood " + i);
    await b.click("#chat-form button");
  }
  await b.waitForFunction(() => window.chat.errors.includes("slow_down"));
  result.floodStatus = await b.locator("#chat-status").textContent();
  result.errors = await b.evaluate(() => window.chat.errors);
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
