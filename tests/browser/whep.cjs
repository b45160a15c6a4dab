// Plays a live stream over WHEP in headless Chromium for a while and reports the decoding.
// Usage: node whep.cjs WHEP_URL SECONDS [TOKEN] [vanish]
// With "vanish", the browser is killed at the end (no DELETE, no goodbye of any kind): a viewer
// that disappears.
// Prints one JSON line: {status, connected, framesDecoded: [per second], audioPackets,
// firstFrameMs (offer sent -> first frame decoded), codec, error, deleteStatus,
// glassToGlassMs: [samples] (when the publisher draws its clock, see whip.cjs), nackCount,
// retransmittedPacketsReceived, packetsLost, pliCount (keyframe requests sent), answerRtx}.
const { chromium } = require("playwright-core");

(async () => {
const [whepUrl, seconds = "6", token = "", mode = ""] = process.argv.slice(2);
const vanish = mode === "vanish";
if (!whepUrl) {
  console.error("usage: node whep.cjs WHEP_URL [SECONDS] [TOKEN] [vanish]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
  ],
});
let result = {};
try {
  const page = await browser.newPage();
  await page.goto(new URL("/healthz", whepUrl).toString());
  result = await page.evaluate(async ({ whepUrl, seconds, token, vanish }) => {
    const r = { status: 0, connected: false, framesDecoded: [], audioPackets: 0, firstFrameMs: null, codec: null, error: null, deleteStatus: 0, glassToGlassMs: [] };
    try {
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
        setTimeout(resolve, 3000);
      });
      const headers = { "Content-Type": "application/sdp" };
      if (token) headers.Authorization = "Bearer " + token;
      const started = performance.now();
      const resp = await fetch(whepUrl, { method: "POST", headers, body: pc.localDescription.sdp, signal: AbortSignal.timeout(10000) });
      r.status = resp.status;
      const answer = await resp.text();
      if (resp.status !== 201) { r.error = answer; return r; }
      const location = resp.headers.get("Location");
      r.answerRtx = /a=rtpmap:\d+ rtx\//.test(answer);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      const video = document.createElement("video");
      video.muted = true;
      video.srcObject = new MediaStream(pc.getReceivers().map((rc) => rc.track));
      document.body.appendChild(video);
      video.play().catch(() => {});
      const canvas = document.createElement("canvas");
      canvas.width = 640; canvas.height = 480;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      const readClock = () => {
        if (!video.videoWidth) return;
        ctx.drawImage(video, 0, 0, 640, 480);
        const px = ctx.getImageData(0, 0, 640, 128).data;
        let t = 0;
        for (let bit = 0; bit < 20; bit++) {
          const x = (bit % 10) * 64 + 32, y = Math.floor(bit / 10) * 64 + 32;
          const i = (y * 640 + x) * 4;
          const luma = (px[i] + px[i + 1] + px[i + 2]) / 3;
          // The low bits change every frame and blur at low bitrates: a few ms of error.
          if (luma > 128) t |= 1 << bit;
        }
        const now = Date.now() % (1 << 20);
        const lag = (now - t + (1 << 20)) % (1 << 20);
        if (lag < 10000) r.glassToGlassMs.push(lag);
      };
      const clockTimer = setInterval(readClock, 100);
      for (let i = 0; i < seconds * 4; i++) {
        await new Promise((res) => setTimeout(res, 250));
        if (pc.connectionState === "connected") r.connected = true;
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video") {
            if ((s.framesDecoded || 0) > 0 && r.firstFrameMs === null) r.firstFrameMs = Math.round(performance.now() - started);
            if (i % 4 === 3) r.framesDecoded.push(s.framesDecoded || 0);
            r.nackCount = s.nackCount || 0;
            r.retransmittedPacketsReceived = s.retransmittedPacketsReceived || 0;
            r.packetsLost = s.packetsLost || 0;
            r.pliCount = s.pliCount || 0;
            const c = s.codecId && stats.get(s.codecId);
            if (c) r.codec = c.mimeType;
          }
          if (s.type === "inbound-rtp" && s.kind === "audio") r.audioPackets = s.packetsReceived || 0;
        });
      }
      clearInterval(clockTimer);
      if (vanish) return r;
      const del = await fetch(new URL(location, whepUrl), { method: "DELETE", signal: AbortSignal.timeout(10000) });
      r.deleteStatus = del.status;
      pc.close();
    } catch (e) {
      r.error = String(e);
    }
    return r;
  }, { whepUrl, seconds: Number(seconds), token, vanish });
} finally {
  if (vanish) {
    console.log(JSON.stringify(result));
    // Playwright kills the browser (SIGKILL) as this process exits.
    process.exit(0);
  }
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
