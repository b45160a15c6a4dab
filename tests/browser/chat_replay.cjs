// A recording's player page replays its broadcast's chat in headless Chromium.
// Usage: node chat_replay.cjs PLAYER_URL SCREENSHOT_DIR TIMEOUT_SECONDS
// Plays the recording from its start until it ends (or the timeout) and reports each chat
// message as the page showed it: {id, text, at (sent, ms), shownAt (the video's wall clock
// from EXT-X-PROGRAM-DATE-TIME when it appeared), videoTime}. Screenshot: chat-replay.png.
// Prints one JSON line: {messages (how many the page fetched), shown, ended, problems, error}.
const { launch } = require("./chromium.cjs");

(async () => {
const [url, shots, timeoutSeconds = "60"] = process.argv.slice(2);
const browser = await launch();
const result = { messages: null, shown: [], ended: false, problems: [], error: null };
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 620 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("pageerror", (e) => result.problems.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.chat && window.chat.replayMessages !== undefined);
  result.messages = await page.evaluate(() => window.chat.replayMessages);
  const deadline = Date.now() + Number(timeoutSeconds) * 1000;
  let shot = false;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => ({ ended: window.player.ended, shown: window.chat.replayShown }));
    result.shown = s.shown;
    result.ended = s.ended;
    if (!shot && s.shown.length > 0) {
      await page.screenshot({ path: `${shots}/chat-replay.png` });
      shot = true;
    }
    if (s.ended || s.shown.length >= result.messages) break;
    await new Promise((r) => setTimeout(r, 250));
  }
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
