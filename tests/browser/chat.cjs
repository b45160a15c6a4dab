// Two viewers open a live stream's player page in two browser contexts of headless Chromium
// and chat beside the video. Steps are driven by the test through files:
// Usage: node chat.cjs PLAYER_URL SCREENSHOT_DIR CONTROL_DIR
// 1. both join; A sends a message with <script> and <img onerror> in it; B must see it as
//    text within 1 s (the time is reported);
// 2. it writes CONTROL_DIR/sent (the message id) and waits for CONTROL_DIR/hidden (the test
//    hides the message over the API), then waits until it is gone from both pages;
// 3. A floods: the page shows the server's "slow down".
// Prints one JSON line.
const fs = require("fs");
const { launch } = require("./chromium.cjs");

async function waitFile(path, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fs.existsSync(path)) return fs.readFileSync(path, "utf8");
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("no " + path);
}

(async () => {
const [url, shots, control] = process.argv.slice(2);
const browser = await launch();
const result = {
  names: [], seenText: null, seenHtml: null, latencyMs: null, pwned: null, hiddenFrom: 0,
  floodStatus: null, errors: [], problems: [], error: null,
};
try {
  const pages = [];
  for (let i = 0; i < 2; i++) {
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
  const text = `<script>window.pwned=1</script> hello <img src=x onerror="window.pwned=2">`;
  await a.fill("#chat-text", text);
  const before = Date.now();
  await a.click("#chat-form button");
  const item = b.locator("#chat-messages li").last();
  await item.waitFor();
  result.latencyMs = Date.now() - before;
  result.seenText = await item.locator(".text").textContent();
  result.seenHtml = await item.locator(".text").innerHTML();
  result.pwned = await b.evaluate(() => window.pwned === undefined ? null : window.pwned);
  const id = await item.getAttribute("data-id");
  await b.screenshot({ path: shots + "/player-chat.png" });
  fs.writeFileSync(control + "/sent", id);
  await waitFile(control + "/hidden", 20000);
  for (const p of pages) {
    await p.waitForFunction((id) => !document.querySelector(`#chat-messages [data-id="${id}"]`), id);
    result.hiddenFrom += 1;
  }
  for (let i = 0; i < 4; i++) {
    await a.fill("#chat-text", "flood " + i);
    await a.click("#chat-form button");
  }
  await a.waitForFunction(() => window.chat.errors.includes("slow_down"));
  result.floodStatus = await a.locator("#chat-status").textContent();
  result.errors = await a.evaluate(() => window.chat.errors);
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
