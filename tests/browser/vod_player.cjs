// An asset's player page in headless Chromium: its captions menu lists the subtitle track and
// turns it on; hovering the scrub bar shows the storyboard frame of that time; the quality
// menu lists the renditions. Usage: node vod_player.cjs PLAYER_URL SCREENSHOT_DIR
// Prints one JSON line: {captions (the menu's options), captionsOn (hls.js's track after
// choosing), preview (the preview's background image), previewTime, qualities, problems, error}.
const { launch } = require("./chromium.cjs");

(async () => {
const [url, shots] = process.argv.slice(2);
const browser = await launch();
const result = { captions: [], captionsOn: null, preview: null, previewTime: null, qualities: [], problems: [], error: null };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 620 } });
  page.setDefaultTimeout(30000);
  page.on("pageerror", (e) => result.problems.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.player.state === "playing");
  await page.waitForFunction(() => !document.getElementById("captions-menu").hidden);
  result.captions = await page.$$eval("#captions option", (os) => os.map((o) => o.textContent));
  await page.selectOption("#captions", "0");
  await page.waitForFunction(() => window.hls.subtitleTrack === 0);
  result.captionsOn = await page.evaluate(() => window.hls.subtitleTrack);
  result.qualities = await page.$$eval("#quality option", (os) => os.map((o) => o.textContent));
  await page.waitForFunction(() => window.player.storyboardCues > 0);
  const box = await page.locator("#seek").boundingBox();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
  await page.waitForFunction(() => window.player.previewShown === true);
  result.preview = await page.evaluate(() => document.getElementById("preview-image").style.backgroundImage);
  result.previewTime = await page.textContent("#preview-time");
  await page.screenshot({ path: shots + "/player-vod.png" });
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
