// A CMAF live stream, encrypted with common encryption, played in headless Chromium with its
// own ClearKey CDM (EME): by the /play page (hls.js), and by hls.js and dash.js on a partner
// site of another origin (playlists, manifest, fragments, licence and clock fetched across
// origins). The partner's players play with a token whose viewer holds the entitlement, and
// play nothing with one whose viewer does not (the licence says 403).
// Usage: node cmaf_play.cjs BASE_URL PLAYBACK_ID ENTITLED_TOKEN UNENTITLED_TOKEN [PLAY_S RUNS]
// PLAY_S: how far each player must play (4 s by default); RUNS: which of the runs below, by
// name, comma-separated (all by default).
// Prints one JSON line: {play, hls, dash, hlsDenied, dashDenied: RUN, error}, where
// RUN = {frames, advanced, licences: [status...], errors: [...], latency, lowLatency}:
// `advanced` is how far the playhead moved after its first decoded frame (the partner's
// hls.js also plays until it is within 2.5 s of its live edge, up to 60 s); for hls.js,
// `latency` is its distance from the live edge (s), `behindIngest` how long ago (s) the
// server received the frame on screen (its program date-time), and `lowLatency` whether
// the playlist it plays lists parts.
const http = require("http");
const fs = require("fs");
const path = require("path");
const { launch } = require("./chromium.cjs");

const [base, playbackId, goodToken, badToken, playS = "4", only = ""] = process.argv.slice(2);
const wanted = Number(playS);
const modules = process.env.NODE_PATH.split(":")[0];
const scripts = {
  "/dash.js": fs.readFileSync(path.join(modules, "dashjs/dist/modern/umd/dash.all.min.js")),
  "/hls.js": fs.readFileSync(path.join(modules, "hls.js/dist/hls.min.js")),
};

// The partner site: a page that plays `?mpd=URL` with dash.js, or `?hls=URL&licence=URL`
// with hls.js and that ClearKey licence.
const partner = http.createServer((req, res) => {
  const script = scripts[req.url];
  if (script) {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(script);
  }
  const dash = req.url.includes("mpd=");
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><html><body><video id="video" muted playsinline style="width:640px"></video>
<script src="${dash ? "/dash.js" : "/hls.js"}"></script>
<script>
  window.errors = [];
  const q = new URLSearchParams(location.search);
  const video = document.getElementById("video");
  if (q.get("mpd")) {
    const player = dashjs.MediaPlayer().create();
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => window.errors.push(JSON.stringify(e.error && (e.error.message || e.error.code) || e)));
    player.initialize(video, q.get("mpd"), true);
  } else {
    // As the /play page configures hls.js: low latency, catching up at up to 1.5×.
    const hls = new Hls({ emeEnabled: true, maxLiveSyncPlaybackRate: 1.5,
      drmSystems: { "org.w3.clearkey": { licenseUrl: q.get("licence") } } });
    hls.on(Hls.Events.ERROR, (_, d) => window.errors.push(d.details));
    window.hls = hls;
    hls.loadSource(q.get("hls"));
    hls.attachMedia(video);
    video.play().catch(() => {});
  }
</script></body></html>`);
});

async function watch(page, url, seconds, settle = false) {
  const run = { frames: 0, advanced: 0, licences: [], errors: [] };
  page.on("response", (r) => { if (r.url().includes("/licenses/clearkey/")) run.licences.push(r.status()); });
  page.on("pageerror", (e) => run.errors.push(String(e)));
  await page.goto(url);
  const deadline = Date.now() + seconds * 1000;
  let firstAt = null;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => {
      const v = document.getElementById("video");
      if (!v) return { frames: 0, t: 0, errors: [] };
      const errors = (window.player && window.player.errors) || window.errors || [];
      const h = window.hls;
      return { frames: v.getVideoPlaybackQuality().totalVideoFrames, t: v.currentTime, errors,
        latency: h && Number.isFinite(h.latency) ? h.latency : null,
        behindIngest: h && h.playingDate ? (Date.now() - h.playingDate.getTime()) / 1000 : null,
        parts: h && h.levels && h.currentLevel >= 0 && h.levels[h.currentLevel].details ? Boolean(h.levels[h.currentLevel].details.partList) : null };
    });
    run.frames = s.frames;
    run.latency = s.latency;
    run.behindIngest = s.behindIngest;
    run.lowLatency = s.parts;
    run.errors = run.errors.filter((e) => !e.startsWith("player: ")).concat(s.errors.map((e) => "player: " + e));
    if (s.frames > 0 && firstAt === null) firstAt = s.t;
    if (firstAt !== null) run.advanced = s.t - firstAt;
    // Played PLAY_S; hls.js, once it has settled near its live edge (it may start further
    // back and catch up), or when the time is up.
    if (run.advanced >= wanted && (!settle || (s.latency !== null && s.latency < 2.5))) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return run;
}

(async () => {
  const browser = await launch();
  const result = { play: null, hls: null, dash: null, hlsDenied: null, dashDenied: null, error: null };
  try {
    await new Promise((r) => partner.listen(0, "127.0.0.1", r));
    const site = `http://127.0.0.1:${partner.address().port}/`;
    const mpd = (t) => `${site}?mpd=${encodeURIComponent(`${base}/dash/${playbackId}/manifest.mpd?token=${t}`)}`;
    const hls = (t) => `${site}?hls=${encodeURIComponent(`${base}/hls/${playbackId}/master.m3u8?token=${t}`)}` +
      `&licence=${encodeURIComponent(`${base}/licenses/clearkey/${playbackId}?token=${t}`)}`;
    const play = (t) => `${base}/play/${playbackId}?token=${t}`;
    for (const [name, url, seconds] of [
      ["play", play(goodToken), 45], ["hls", hls(goodToken), 60], ["dash", mpd(goodToken), 45],
      ["hlsDenied", hls(badToken), 12], ["dashDenied", mpd(badToken), 12],
    ].filter(([name]) => !only || only.split(",").includes(name))) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.setDefaultTimeout(20000);
      result[name] = await watch(page, url, seconds + wanted, name === "hls");
      await context.close();
    }
  } catch (e) {
    result.error = String(e);
  } finally {
    partner.close();
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
