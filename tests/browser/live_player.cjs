// A viewer watches a live stream on its player page in headless Chromium, and a partner site
// on another origin embeds the same stream in an iframe.
// Usage: node live_player.cjs BASE_URL PLAYBACK_ID SCREENSHOT_DIR
// On /play: waits for frames, the live badge and a viewer count of at least 1; reads the
// quality menu and picks its lowest rendition (hls.js must switch to it); steps back 10 s
// behind the live edge ("back to live" appears) and clicks "back to live" (the player returns to the edge).
// Then serves a page from 127.0.0.1 on another port with an <iframe> of /embed/ID and waits
// for the video inside it to play. Screenshots: player-live.png, embed-iframe.png.
// Prints one JSON line: {frames, badge, viewers, qualities, switchedTo, behindShown,
// backAtEdge, embedFrames, embedChrome, problems, error}.
const http = require("http");
const { launch } = require("./chromium.cjs");

(async () => {
const [base, playbackId, shots] = process.argv.slice(2);
const browser = await launch();
const result = {
  frames: 0, badge: null, viewers: null, qualities: [], switchedTo: null, behindShown: false,
  backAtEdge: false, embedFrames: 0, embedChrome: null, problems: [], error: null,
};
let partner = null;
let playPage = null;
const consoleLines = [];
const frames = () => {
  const v = document.getElementById("video");
  return v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
};
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 620 } });
  const page = await context.newPage();
  playPage = page;
  page.on("console", (m) => consoleLines.push(m.type() + ": " + m.text()));
  page.setDefaultTimeout(45000);
  page.on("pageerror", (e) => result.problems.push("play: " + String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) result.problems.push("play: " + m.text());
  });
  await page.goto(`${base}/play/${playbackId}`);
  await page.waitForFunction(frames);
  await page.waitForFunction(() => !document.getElementById("live-badge").hidden);
  result.badge = await page.textContent("#live-badge");
  await page.waitForFunction(() => window.player.viewers >= 1, null, { timeout: 40000 });
  result.viewers = await page.evaluate(() => window.player.viewers);
  await page.waitForFunction(() => document.querySelectorAll("#quality option").length >= 3);
  result.qualities = await page.$$eval("#quality option", (os) => os.map((o) => o.textContent));
  const lowest = await page.$$eval("#quality option", (os) => os[os.length - 1].value);
  await page.selectOption("#quality", lowest);
  await page.waitForFunction((i) => window.hls.currentLevel === Number(i) && window.hls.levels[window.hls.currentLevel].height > 0, lowest);
  result.switchedTo = await page.evaluate(() => window.hls.levels[window.hls.currentLevel].height);
  // Steps back 10 s behind the point hls.js holds, once the window has that much behind it.
  await page.waitForFunction(() => { const v = document.getElementById("video"); return v.seekable.length && (window.hls.liveSyncPosition || v.seekable.end(0)) - v.seekable.start(0) > 13; }, null, { timeout: 45000 });
  await page.evaluate(() => { const v = document.getElementById("video"); v.currentTime = (window.hls.liveSyncPosition || v.seekable.end(0)) - 10; });
  await page.waitForFunction(() => !document.getElementById("back-to-live").hidden, null, { timeout: 15000 });
  result.behindShown = true;
  await page.hover("#stage");
  await page.click("#back-to-live");
  await page.waitForFunction(() => window.player.atLiveEdge === true, null, { timeout: 15000 });
  result.backAtEdge = true;
  result.frames = await page.evaluate(frames);
  await page.hover("#seek");
  await page.screenshot({ path: `${shots}/player-live.png` });

  // A partner site on another origin embeds the stream.
  partner = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html><head><title>Partner site</title></head><body style="font:16px sans-serif;background:#f4f5f7">` +
      `<h1>Our match report</h1><iframe id="player" src="${base}/embed/${playbackId}" width="640" height="360" ` +
      `style="border:0" allow="autoplay; fullscreen" allowfullscreen></iframe></body></html>`);
  });
  await new Promise((r) => partner.listen(0, "127.0.0.1", r));
  setTimeout(() => partner.close(), 120000).unref();
  const site = await context.newPage();
  site.setDefaultTimeout(45000);
  site.on("pageerror", (e) => result.problems.push("partner: " + String(e)));
  await site.goto(`http://127.0.0.1:${partner.address().port}/`);
  const frame = await (await site.waitForSelector("#player")).contentFrame();
  frame.on && frame.on("pageerror", (e) => result.problems.push("embed: " + String(e)));
  await frame.waitForFunction(frames);
  result.embedFrames = await frame.evaluate(frames);
  result.embedChrome = await frame.evaluate(() => ({ header: Boolean(document.querySelector(".fc-header")), chat: Boolean(document.getElementById("chat")) }));
  await site.screenshot({ path: `${shots}/embed-iframe.png` });
} catch (e) {
  result.error = String(e);
  result.console = consoleLines;
  if (playPage) result.player = await playPage.evaluate(() => {
    const v = document.getElementById("video");
    const r = v.getBoundingClientRect();
    return JSON.stringify({ player: window.player, rect: [r.width, r.height], readyState: v.readyState, t: v.currentTime,
      paused: v.paused, q: v.getVideoPlaybackQuality().totalVideoFrames, d: v.duration, css: getComputedStyle(v).width });
  }).catch(String);
} finally {
  if (partner) partner.close();
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
