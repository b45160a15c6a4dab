// Plays a Ferrocast playback id with plain hls.js (no Ferrocast script) in headless Chromium,
// its CMCD v2 event reports going to the server's POST /v1/cmcd (cmcd.eventTargets), as a
// third-party page would. Usage: node cmcd_v2.cjs BASE_URL PLAYBACK_ID SECONDS TIMEOUT_SECONDS
// Prints one JSON line: {sessionId, startupMs, playedS, fatal}: the CMCD session id (the
// view), the page's own measure of startup (play request to first frame), and how far it
// played. Debian's Chromium, driven by playwright-core; run with NODE_PATH set as for play.cjs.
const { launch } = require("./chromium.cjs");

(async () => {
const [base, playbackId, seconds = "6", timeoutSeconds = "40"] = process.argv.slice(2);
const browser = await launch();
let result = { sessionId: null, startupMs: null, playedS: 0, fatal: null };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  // Any page of the server's origin: the player is built on it below.
  await page.goto(base + "/healthz", { timeout: 15000 });
  result.sessionId = await page.evaluate(async ({ base, playbackId }) => {
    await new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "/play/hls.min.js";
      s.onload = resolve;
      s.onerror = reject;
      document.head.appendChild(s);
    });
    const video = document.createElement("video");
    video.muted = true;
    document.body.appendChild(video);
    const sessionId = "cmcdv2-" + Math.random().toString(36).slice(2, 12);
    window.probe = { playAt: null, startupMs: null, fatal: null, video };
    video.addEventListener("play", () => { if (window.probe.playAt === null) window.probe.playAt = Date.now(); });
    video.addEventListener("playing", () => {
      if (window.probe.startupMs === null) window.probe.startupMs = Date.now() - window.probe.playAt;
    });
    const hls = new Hls({
      cmcd: {
        version: 2, sessionId, contentId: playbackId, useHeaders: false,
        eventTargets: [{ url: base + "/v1/cmcd", events: ["ps", "bc", "e", "t"], interval: 2, batchSize: 1 }],
      },
    });
    hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.probe.fatal = d.details; });
    hls.loadSource("/hls/" + playbackId + "/master.m3u8");
    hls.attachMedia(video);
    video.play().catch(() => {});
    return sessionId;
  }, { base, playbackId });
  const deadline = Date.now() + Number(timeoutSeconds) * 1000;
  let firstFrameAt = null;
  while (Date.now() < deadline) {
    const p = await page.evaluate(() => ({
      startupMs: window.probe.startupMs, fatal: window.probe.fatal,
      time: window.probe.video.currentTime,
    }));
    result.startupMs = p.startupMs;
    result.fatal = p.fatal;
    if (p.startupMs !== null && firstFrameAt === null) firstFrameAt = p.time;
    if (firstFrameAt !== null) result.playedS = p.time - firstFrameAt;
    if (p.fatal || result.playedS >= Number(seconds)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  // Reports go one event at a time: give the last ones a moment.
  await new Promise((r) => setTimeout(r, 1000));
} catch (e) {
  result.fatal = String(e);
} finally {
  console.log(JSON.stringify(result));
  await browser.close();
}
})();
