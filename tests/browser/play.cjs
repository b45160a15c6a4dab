// Plays a Ferrocast /play page in headless Chromium and reports what the player did.
// Usage: node play.cjs URL MIN_SECONDS TIMEOUT_SECONDS [UNTIL]
// Stops once the video has played MIN_SECONDS from its first frame (or, with UNTIL=ended,
// once it fired `ended`),
// on a fatal player error, or after TIMEOUT_SECONDS.
// Prints one JSON line: {currentTime, frames, firstFrameTime, longestFreeze, ended, state,
// keyLoaded, fatal, errors, keyRequests, keyFailures, subtitleTracks, viewId, startupMs, watchMs}:
// the last three are the page's own analytics view id and its measures of startup and watch
// time (from the play request to leaving the page, which ends the view). `frames` counts decoded
// video frames, `firstFrameTime` is the playhead when the first one was seen (a live stream
// starts behind its edge, not at 0);
// `longestFreeze` is the longest time (s) without a new frame, from the first frame on,
// while the video was not paused and had not ended.
// Debian's Chromium (/usr/bin/chromium, or $CHROMIUM) is driven by playwright-core; nothing is
// downloaded. Run with NODE_PATH pointing at the node_modules `make` installs.
const { launch } = require("./chromium.cjs");

(async () => {
const [url, minSeconds = "5", timeoutSeconds = "40", until = "seconds"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node play.cjs URL [MIN_SECONDS] [TIMEOUT_SECONDS] [seconds|ended]");
  process.exit(2);
}
const browser = await launch();
let result = {
  currentTime: 0, frames: 0, firstFrameTime: null, longestFreeze: 0, ended: false, state: null, keyLoaded: false,
  fatal: null, errors: [], keyRequests: 0, keyFailures: 0, subtitleTracks: 0,
};
try {
  const page = await browser.newPage();
  // PLAY_HEADERS: extra request headers as JSON (a country header a CDN would add).
  if (process.env.PLAY_HEADERS) await page.setExtraHTTPHeaders(JSON.parse(process.env.PLAY_HEADERS));
  page.setDefaultTimeout(15000);
  page.on("response", (r) => {
    if (r.url().includes("/keys/")) {
      result.keyRequests += 1;
      if (r.status() !== 200) result.keyFailures += 1;
    }
  });
  await page.goto(url, { timeout: 15000 });
  const deadline = Date.now() + Number(timeoutSeconds) * 1000;
  let lastFrames = 0;
  let lastChange = null;
  let startTime = null;
  while (Date.now() < deadline) {
    const state = await page.evaluate(() => {
      const video = document.getElementById("video");
      // A page that cannot play shows a notice instead of a player: its state says why.
      if (!video) return { noPlayer: true, state: window.player ? window.player.state : null };
      const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      return {
        currentTime: video.currentTime,
        frames: quality ? quality.totalVideoFrames : 0,
        paused: video.paused,
        ended: window.player.ended || video.ended,
        state: window.player.state,
        keyLoaded: window.player.keyLoaded,
        fatal: window.player.fatal,
        errors: window.player.errors,
        subtitleTracks: window.player.subtitleTracks,
        viewId: window.player.viewId,
        startupMs: window.player.startupMs,
      };
    });
    if (state.noPlayer) { result.state = state.state; break; }
    const now = Date.now();
    if (state.frames > 0 && result.firstFrameTime === null) result.firstFrameTime = state.currentTime;
    if (state.frames > lastFrames) {
      lastFrames = state.frames;
      lastChange = now;
    } else if (lastChange !== null && !state.paused && !state.ended) {
      result.longestFreeze = Math.max(result.longestFreeze, (now - lastChange) / 1000);
    }
    const { paused, ...report } = state;
    Object.assign(result, report);
    if (state.fatal) break;
    // Audio-only media has no frames: its playhead counts from where it started.
    if (startTime === null && state.currentTime > 0) startTime = state.currentTime;
    const base = result.firstFrameTime !== null ? result.firstFrameTime : startTime;
    const played = base === null ? 0 : state.currentTime - base;
    if (until === "ended" ? state.ended : played >= Number(minSeconds)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  // Leave the page as a viewer would: its analytics end the view on pagehide.
  result.watchMs = await page.evaluate(() => !window.player || window.player.playAt == null ? null : Date.now() - window.player.playAt);
  await page.goto("about:blank", { timeout: 5000 }).catch(() => {});
  await new Promise((r) => setTimeout(r, 500));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
