// Page load -> first video frame of a Ferrocast /play page in headless Chromium (hls.js).
// Usage: node first-frame.cjs PLAY_URL TIMES
// Prints one JSON line: {firstFrameMs: [one per load, from navigation start], errors}.
// Each load is a new browser context (empty cache). Every wait has a timeout (launch 30 s,
// navigation 30 s, first frame 15 s); a load that times out is reported in `errors`, naming
// what it waited for. Run with NODE_PATH at make's node_modules.
const { chromium } = require("playwright-core");

(async () => {
const [url, times = "3"] = process.argv.slice(2);
const browser = await chromium.launch({
  timeout: 30000,
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
const result = { firstFrameMs: [], errors: [] };
try {
  for (let i = 0; i < Number(times); i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    // The first presented frame, in ms since navigation start (performance.timeOrigin).
    await page.addInitScript(() => {
      document.addEventListener("DOMContentLoaded", () => {
        const video = document.getElementById("video");
        video.requestVideoFrameCallback(() => { window.__firstFrame = performance.now(); });
      });
    });
    let waiting = "the page to load (30 s)";
    try {
      await page.goto(url, { timeout: 30000 });
      waiting = "the first video frame (15 s)";
      await page.waitForFunction(() => window.__firstFrame !== undefined, null, { timeout: 15000 });
      result.firstFrameMs.push(Math.round(await page.evaluate(() => window.__firstFrame)));
    } catch (e) {
      result.errors.push(`load ${i + 1}: waiting for ${waiting}: ${e}`);
    }
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
