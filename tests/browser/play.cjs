// Plays a Ferrocast /play page in headless Chromium and reports what the player did.
// Usage: node play.cjs URL MIN_SECONDS TIMEOUT_SECONDS
// Prints one JSON line: {currentTime, keyLoaded, fatal, errors, keyRequests, keyFailures}.
// Debian's Chromium (/usr/bin/chromium, or $CHROMIUM) is driven by playwright-core; nothing is
// downloaded. Run with NODE_PATH pointing at the node_modules `make` installs.
const { chromium } = require("playwright-core");

(async () => {
const [url, minSeconds = "5", timeoutSeconds = "40"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node play.cjs URL [MIN_SECONDS] [TIMEOUT_SECONDS]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
let result = { currentTime: 0, keyLoaded: false, fatal: null, errors: [], keyRequests: 0, keyFailures: 0, subtitleTracks: 0 };
try {
  const page = await browser.newPage();
  page.on("response", (r) => {
    if (r.url().includes("/keys/")) {
      result.keyRequests += 1;
      if (r.status() !== 200) result.keyFailures += 1;
    }
  });
  await page.goto(url);
  const deadline = Date.now() + Number(timeoutSeconds) * 1000;
  while (Date.now() < deadline) {
    const state = await page.evaluate(() => ({
      currentTime: document.getElementById("video").currentTime,
      keyLoaded: window.player.keyLoaded,
      fatal: window.player.fatal,
      errors: window.player.errors,
      subtitleTracks: window.player.subtitleTracks,
    }));
    Object.assign(result, state);
    if (state.currentTime >= Number(minSeconds) || state.fatal) break;
    await new Promise((r) => setTimeout(r, 250));
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
