// A creator's own page, on another origin than Ferrocast, plays a signed stream with hls.js,
// sending the playback token only in an `Authorization: Bearer` header (xhrSetup): every
// playlist, segment and key request is cross-origin and needs a CORS preflight.
// Usage: node cross_origin.cjs FERROCAST_BASE PLAYBACK_ID TOKEN MIN_SECONDS TIMEOUT_SECONDS
// The page is served by this script from 127.0.0.1 on a port of its own. Prints one JSON line:
// {origin, currentTime, frames, keyLoaded, fatal, errors, requests: [{url, method, status,
// authorization}], preflights}.
const http = require("http");
const { launch } = require("./chromium.cjs");

(async () => {
const [base, playbackId, token, minSeconds = "3", timeoutSeconds = "40"] = process.argv.slice(2);
const page_html = `<!doctype html><title>A creator's site</title>
<video id="video" muted playsinline></video>
<script src="${base}/play/hls.min.js"></script>
<script>
  window.player = { keyLoaded: false, fatal: null, errors: [] };
  const video = document.getElementById("video");
  const hls = new Hls({
    xhrSetup: (xhr) => xhr.setRequestHeader("Authorization", "Bearer ${token}"),
  });
  hls.on(Hls.Events.KEY_LOADED, () => { window.player.keyLoaded = true; });
  hls.on(Hls.Events.ERROR, (_, d) => {
    window.player.errors.push(d.details + (d.response ? " " + d.response.code : ""));
    if (d.fatal) window.player.fatal = d.details;
  });
  hls.loadSource("${base}/hls/${playbackId}/master.m3u8");
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
</script>`;
const site = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end(page_html);
});
await new Promise((r) => site.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${site.address().port}`;
const browser = await launch();
const result = { origin, currentTime: 0, frames: 0, keyLoaded: false, fatal: null, errors: [], requests: [], preflights: 0 };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on("request", (r) => {
    if (r.url().startsWith(base) && !r.url().endsWith("hls.min.js")) {
      result.requests.push({ url: r.url().replace(base, ""), method: r.method(), authorization: !!r.headers()["authorization"] });
    }
  });
  page.on("response", (r) => {
    const entry = result.requests.find((q) => base + q.url === r.url() && q.status === undefined);
    if (entry) entry.status = r.status();
  });
  // Chromium's preflights do not reach page events; the server counts them.
  await page.goto(origin + "/");
  const deadline = Date.now() + Number(timeoutSeconds) * 1000;
  let start = null;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => {
      const v = document.getElementById("video");
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      return { currentTime: v.currentTime, frames: q ? q.totalVideoFrames : 0, ...window.player };
    });
    Object.assign(result, s);
    if (s.fatal) break;
    if (start === null && s.frames > 0) start = s.currentTime;
    if (start !== null && s.currentTime - start >= Number(minSeconds)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
} catch (e) {
  result.fatal = String(e);
} finally {
  await browser.close();
  site.close();
}
result.requests = result.requests.slice(0, 40);
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
