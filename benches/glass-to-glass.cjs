// Glass-to-glass latency of a live HLS stream in headless Chromium with hls.js: the publisher
// draws the wall clock (ms since the epoch) into every frame as a bar code (BITS blocks of
// BLOCK px in the frame's top rows, white = 1, most significant first, drawn twice: the
// two rows must agree); each frame the page presents is copied to a canvas, the bar code read
// back and compared with the time it is shown (requestVideoFrameCallback's expected display
// time, on the same machine's clock).
// Usage: node glass-to-glass.cjs PLAYLIST_URL WARMUP_S SECONDS [LOW_LATENCY=1]
// Prints one JSON line: {samples: [ms...], unread, latencyS, errors}: one sample per frame
// read after WARMUP_S of playing; `unread` counts frames whose bar code did not read;
// `latencyS` is hls.js's own distance from its live edge at the end.
const http = require("http");
const fs = require("fs");
const path = require("path");
const { launch } = require("../tests/browser/chromium.cjs");

const [url, warmup = "10", seconds = "30", lowLatency = "1"] = process.argv.slice(2);
const modules = process.env.NODE_PATH.split(":")[0];
const hlsJs = fs.readFileSync(path.join(modules, "hls.js/dist/hls.min.js"));

// Must match the publisher in benches/cmaf.rs.
const BITS = 44, BLOCK = 24, ROWS = 2;

const page = `<!doctype html><html><body><video id="video" muted playsinline width="1280" height="720"></video>
<canvas id="c" width="1280" height="${BLOCK * ROWS}"></canvas>
<script src="/hls.js"></script>
<script>
  window.errors = []; window.samples = []; window.unread = 0; window.measuring = false;
  const video = document.getElementById("video");
  const ctx = document.getElementById("c").getContext("2d", { willReadFrequently: true });
  // As the /play page configures hls.js (low latency, catching up at up to 1.5×), or its
  // defaults for a stream without parts.
  const hls = new Hls(${lowLatency === "1"} ? { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5,
    emeEnabled: true, drmSystems: { "org.w3.clearkey": { licenseUrl: ${JSON.stringify(url)}.replace(/\\/hls\\/([^/]+)\\/.*/, "/licenses/clearkey/$1") } } } : {});
  hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.errors.push(d.details); });
  window.hls = hls;
  hls.loadSource(${JSON.stringify(url)});
  hls.attachMedia(video);
  video.play().catch((e) => window.errors.push(String(e)));
  function read(row) {
    const px = ctx.getImageData(0, row * ${BLOCK}, ${BITS * BLOCK}, 1).data;
    let ms = 0;
    for (let i = 0; i < ${BITS}; i++) {
      const x = i * ${BLOCK} + ${BLOCK / 2};
      ms = ms * 2 + (px[x * 4] > 128 ? 1 : 0);
    }
    return ms;
  }
  function onFrame(now, meta) {
    if (window.measuring) {
      const shown = performance.timeOrigin + meta.expectedDisplayTime;
      // The bar code, scaled from the rendition's size to 1280 wide.
      ctx.drawImage(video, 0, 0, video.videoWidth, video.videoWidth * ${BLOCK * ROWS} / 1280,
        0, 0, 1280, ${BLOCK * ROWS});
      const a = read(0), b = read(1);
      const latency = shown - a;
      if (a === b && latency > -1000 && latency < 60000) window.samples.push(Math.round(latency));
      else window.unread++;
    }
    video.requestVideoFrameCallback(onFrame);
  }
  video.requestVideoFrameCallback(onFrame);
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
  const result = { samples: [], unread: 0, latencyS: null, errors: [] };
  try {
    const p = await browser.newPage();
    p.on("pageerror", (e) => result.errors.push(String(e)));
    await p.goto(`http://127.0.0.1:${server.address().port}/`, { timeout: 30000 });
    await p.waitForFunction(() => document.getElementById("video").currentTime > 0, null, { timeout: 60000 });
    await p.waitForTimeout(Number(warmup) * 1000);
    await p.evaluate(() => { window.measuring = true; });
    await p.waitForTimeout(Number(seconds) * 1000);
    const s = await p.evaluate(() => ({ samples: window.samples, unread: window.unread, errors: window.errors,
      latencyS: Number.isFinite(window.hls.latency) ? window.hls.latency : null }));
    Object.assign(result, s);
  } catch (e) {
    result.errors.push(String(e));
  } finally {
    await browser.close();
    server.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
