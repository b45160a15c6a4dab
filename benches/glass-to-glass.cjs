// Glass-to-glass latency of a live HLS stream in headless Chromium with hls.js: the publisher
// draws the wall clock (ms since the epoch) into every frame as a bar code (BITS blocks of
// BLOCK px in the frame's top rows, white = 1, most significant first, drawn twice: the two
// rows must agree). The page shows the video at 1280x720 in its top-left corner; screenshots
// of the bar code's rows, five a second (so that the instrument does not load the machine it
// measures), are read back and compared with when they were taken (the middle of the
// screenshot call, on the same machine's clock). Screenshots, not
// a canvas copy of the video element: Chromium gives a canvas black frames for video
// decrypted by EME (CMAF), and the comparison must be the same for both streams.
// Usage: node glass-to-glass.cjs PLAYLIST_URL WARMUP_S SECONDS [LOW_LATENCY=1] [TRACE_FILE]
// Prints one JSON line: {samples: [ms...], unread, spreadMs, latencyS, targetLatencyS,
// height, errors}: one sample per screenshot read after WARMUP_S of playing; `unread` counts
// those whose bar code did not read; `spreadMs` is the median time a screenshot took (the
// samples' uncertainty); at the end, hls.js's own distance from its live edge, the distance
// it aims at (which grows by a second per stall, up to a target duration), and the
// rendition's height; `liveJumps`, how often the page jumped back to the live edge; `stalls`,
// hls.js's stalls (each raises its target by a second). TRACE_FILE, when given, gets what
// hls.js did (JSON lines, see `trace` in the page) and each screenshot's reading.
const http = require("http");
const fs = require("fs");
const path = require("path");
const { launch } = require("../tests/browser/chromium.cjs");

const [url, warmup = "10", seconds = "30", lowLatency = "1", traceFile] = process.argv.slice(2);
const modules = process.env.NODE_PATH.split(":")[0];
const hlsJs = fs.readFileSync(path.join(modules, "hls.js/dist/hls.min.js"));

// Must match the publisher in benches/cmaf.rs.
const BITS = 44, BLOCK = 24, ROWS = 2;

const page = `<!doctype html><html><body style="margin:0;background:#000">
<video id="video" muted playsinline style="position:absolute;left:0;top:0;width:1280px;height:720px"></video>
<canvas id="c" width="${BITS * BLOCK}" height="${BLOCK * ROWS}" style="display:none"></canvas>
<script src="/hls.js"></script>
<script>
  window.errors = [];
  const video = document.getElementById("video");
  const ctx = document.getElementById("c").getContext("2d", { willReadFrequently: true });
  // As the /play page configures hls.js (low latency, catching up at up to 1.5×, the
  // ClearKey licence of the playback id), or its defaults for a stream without parts.
  const source = ${JSON.stringify(url)};
  window.trace = [];
  const note = (e) => window.trace.push(Object.assign({ t: Date.now() }, e));
  // With a trace, hls.js's own log too.
  const log = (level) => (...a) => note({ ev: level, msg: a.map(String).join(" ").slice(0, 400) });
  const debug = ${traceFile ? "true" : "false"} && { debug: () => {}, log: log("log"), info: log("info"),
    warn: log("warn"), error: log("error") };
  const hls = new Hls(Object.assign(${lowLatency === "1"} ? { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5,
    emeEnabled: true, drmSystems: { "org.w3.clearkey": {
      licenseUrl: source.replace(/\\/hls\\/([^/]+)\\/.*/, "/licenses/clearkey/$1") } } } : {}, { debug }));
  hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.errors.push(d.details); });
  window.hls = hls;
  // What hls.js did, for finding the cause of a stall (TRACE_FILE): its errors (a stall is
  // bufferStalledError), every part and segment it loaded (when asked, first byte, done),
  // every playlist, and once a second where it plays.
  window.stalls = 0;
  const ahead = () => {
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= video.currentTime + 0.05 && video.currentTime <= b.end(i)) {
        return +(b.end(i) - video.currentTime).toFixed(3);
      }
    }
    return 0;
  };
  hls.on(Hls.Events.ERROR, (_, d) => {
    if (d.details === "bufferStalledError") window.stalls++;
    note({ ev: "error", details: d.details, fatal: d.fatal, ahead: ahead(), url: d.frag && d.frag.url,
      code: d.response && d.response.code });
  });
  const timing = (s) => s && s.loading ? [Math.round(s.loading.start), Math.round(s.loading.first),
    Math.round(s.loading.end)] : null;
  hls.on(Hls.Events.FRAG_LOADED, (_, d) => note({ ev: "frag", url: (d.part || d.frag).url,
    level: d.frag.level, type: d.frag.type, at: timing(d.part ? d.part.stats : d.frag.stats), ahead: ahead() }));
  hls.on(Hls.Events.LEVEL_LOADED, (_, d) => note({ ev: "level", level: d.level, msn: d.details.endSN,
    part: d.details.endPart, at: timing(d.stats) }));
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => note({ ev: "switched", level: d.level }));
  for (const e of ["waiting", "playing", "seeking", "stalled"]) {
    video.addEventListener(e, () => note({ ev: e, ahead: ahead(), time: video.currentTime }));
  }
  setInterval(() => note({ ev: "tick", latency: hls.latency, target: hls.targetLatency, ahead: ahead(),
    rate: video.playbackRate, time: video.currentTime }), 1000);
  // As the /play page does: hls.js speeds up only within a target duration of its target
  // latency, so a low-latency stream that drifts further back (a late start, a stall) jumps
  // back to the live edge (checked each second).
  window.liveJumps = 0;
  setInterval(() => {
    const level = hls.levels[hls.currentLevel];
    const lowLatency = level && level.details && level.details.live && level.details.partList;
    if (lowLatency && !video.paused && hls.liveSyncPosition && hls.latency > hls.targetLatency + 3) {
      window.liveJumps++;
      video.currentTime = hls.liveSyncPosition;
    }
  }, 1000);
  hls.loadSource(source);
  hls.attachMedia(video);
  video.play().catch((e) => window.errors.push(String(e)));
  // The bar code in a screenshot (PNG, base64): the mean red of the middle third of each
  // block, for each row of blocks.
  window.readShot = async (b64) => {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, ${BITS * BLOCK}, ${BLOCK * ROWS}).data;
    const third = ${BLOCK / 3};
    const rows = [];
    for (let row = 0; row < ${ROWS}; row++) {
      let ms = 0;
      for (let i = 0; i < ${BITS}; i++) {
        let sum = 0, n = 0;
        for (let y = row * ${BLOCK} + third; y < row * ${BLOCK} + 2 * third; y++) {
          for (let x = i * ${BLOCK} + third; x < i * ${BLOCK} + 2 * third; x++) {
            sum += px[(y * ${BITS * BLOCK} + x) * 4]; n++;
          }
        }
        ms = ms * 2 + (sum / n > 128 ? 1 : 0);
      }
      rows.push(ms);
    }
    return rows;
  };
</script></body></html>`;

const server = http.createServer((req, res) => {
  if (req.url === "/hls.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(hlsJs);
  }
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(page);
});

(async () => {
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const browser = await launch();
  const result = { samples: [], unread: 0, spreadMs: null, latencyS: null, targetLatencyS: null, height: null,
    liveJumps: 0, stalls: 0, errors: [] };
  try {
    const p = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    p.on("pageerror", (e) => result.errors.push(String(e)));
    await p.goto(`http://127.0.0.1:${server.address().port}/`, { timeout: 30000 });
    await p.waitForFunction(() => document.getElementById("video").currentTime > 0, null, { timeout: 60000 });
    await p.waitForTimeout(Number(warmup) * 1000);
    const spreads = [];
    const shots = [];
    const end = Date.now() + Number(seconds) * 1000;
    while (Date.now() < end) {
      const before = Date.now();
      const png = await p.screenshot({ clip: { x: 0, y: 0, width: BITS * BLOCK, height: BLOCK * ROWS }, timeout: 5000 });
      const after = Date.now();
      const [a, b] = await p.evaluate((b64) => window.readShot(b64), png.toString("base64"));
      const latency = (before + after) / 2 - a;
      if (a === b && latency > -1000 && latency < 60000) {
        result.samples.push(Math.round(latency));
        shots.push({ t: Math.round((before + after) / 2), ev: "glass", ms: Math.round(latency) });
        spreads.push(after - before);
      } else {
        result.unread++;
      }
      await p.waitForTimeout(Math.max(0, 200 - (Date.now() - before)));
    }
    spreads.sort((x, y) => x - y);
    result.spreadMs = spreads.length ? spreads[spreads.length >> 1] : null;
    const s = await p.evaluate(() => ({ errors: window.errors,
      latencyS: Number.isFinite(window.hls.latency) ? window.hls.latency : null,
      targetLatencyS: window.hls.targetLatency, height: document.getElementById("video").videoHeight,
      liveJumps: window.liveJumps, stalls: window.stalls, trace: window.trace }));
    if (traceFile) {
      fs.writeFileSync(traceFile, s.trace.concat(shots).sort((x, y) => x.t - y.t).map((e) => JSON.stringify(e)).join("\n") + "\n");
    }
    result.errors.push(...s.errors);
    Object.assign(result, { latencyS: s.latencyS, targetLatencyS: s.targetLatencyS, height: s.height,
      liveJumps: s.liveJumps, stalls: s.stalls });
  } catch (e) {
    result.errors.push(String(e));
  } finally {
    await browser.close();
    server.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
