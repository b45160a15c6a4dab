// Publishes Chromium's fake camera and microphone to a WHIP endpoint for a while.
// Usage: node whip.cjs WHIP_URL SECONDS [CODEC] [clock|vanish]   (CODEC: VP8, H264, or any)
// With "vanish", the browser is killed (SIGKILL) at the end, without DELETE or any goodbye
// (a publisher that disappears).
// With "clock", the video is a canvas showing the sender's clock (Date.now() in ms, modulo
// 2^20) as 20 black or white squares, which whep.cjs reads back for glass-to-glass latency.
// Prints one JSON line: {status, location, connected, framesSent, codec, error, deleteStatus,
// candidatePorts and candidateIps (of the answer's UDP ICE candidates), answerRtx, nackCount
// and retransmittedPacketsSent (NACKs from the server and the packets resent for them),
// keyframeRequests and keyFramesEncoded (keyframe requests, PLI or FIR, from the server; keyframes
// made)}.
// The page is the server's /healthz: 127.0.0.1 is a secure context, as getUserMedia needs.
const { chromium } = require("playwright-core");

(async () => {
const [whipUrl, seconds = "10", codec = "any", mode = ""] = process.argv.slice(2);
const clock = mode === "clock", vanish = mode === "vanish";
if (!whipUrl) {
  console.error("usage: node whip.cjs WHIP_URL [SECONDS] [VP8|H264|any]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
  ],
});
let result = { status: 0, location: null, connected: false, framesSent: 0, codec: null, error: null, deleteStatus: 0 };
try {
  const page = await browser.newPage();
  await page.goto(new URL("/healthz", whipUrl).toString());
  const out = await page.evaluate(async ({ whipUrl, seconds, codec, clock, vanish }) => {
    const r = { status: 0, location: null, connected: false, framesSent: 0, codec: null, error: null, deleteStatus: 0 };
    try {
      let stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480, frameRate: 30 }, audio: true });
      if (clock) {
        const canvas = document.createElement("canvas");
        canvas.width = 640; canvas.height = 480;
        document.body.appendChild(canvas);
        const ctx = canvas.getContext("2d");
        const draw = () => {
          const t = Date.now() % (1 << 20);
          ctx.fillStyle = "#808080"; ctx.fillRect(0, 0, 640, 480);
          for (let bit = 0; bit < 20; bit++) {
            ctx.fillStyle = (t >> bit) & 1 ? "#ffffff" : "#000000";
            ctx.fillRect((bit % 10) * 64, Math.floor(bit / 10) * 64, 64, 64);
          }
        };
        // One timer, never more: a draw that also scheduled itself by requestAnimationFrame
        // added a drawing chain every 16 ms, and after 10 s the page was drawing hundreds of
        // times a frame; its starved capture then sent no video for seconds.
        draw();
        setInterval(draw, 16);
        stream = new MediaStream([...canvas.captureStream(30).getVideoTracks(), ...stream.getAudioTracks()]);
      }
      const pc = new RTCPeerConnection();
      const video = pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
      pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly" });
      if (codec !== "any") {
        const codecs = RTCRtpSender.getCapabilities("video").codecs;
        const wanted = codecs.filter((c) => c.mimeType.toUpperCase() === "VIDEO/" + codec &&
          (codec !== "H264" || (c.sdpFmtpLine || "").includes("packetization-mode=1")));
        video.setCodecPreferences([...wanted, ...codecs.filter((c) => !wanted.includes(c))]);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
        setTimeout(resolve, 3000);
      });
      const resp = await fetch(whipUrl, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp, signal: AbortSignal.timeout(10000) });
      r.status = resp.status;
      r.location = resp.headers.get("Location");
      const answer = await resp.text();
      if (resp.status !== 201) { r.error = answer; return r; }
      const udp = answer.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:") && l.split(" ")[2].toUpperCase() === "UDP");
      r.candidatePorts = udp.map((l) => Number(l.split(" ")[5]));
      r.candidateIps = [...new Set(udp.map((l) => l.split(" ")[4]))];
      r.answerRtx = /a=rtpmap:\d+ rtx\//.test(answer);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      const until = Date.now() + seconds * 1000;
      while (Date.now() < until) {
        await new Promise((res) => setTimeout(res, 500));
        if (pc.connectionState === "connected") r.connected = true;
        if (pc.connectionState === "failed") { r.error = "connection failed"; break; }
      }
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "video") {
          r.framesSent = s.framesSent || 0;
          // NACKs the server sent, and the packets resent for them.
          r.nackCount = s.nackCount || 0;
          r.retransmittedPacketsSent = s.retransmittedPacketsSent || 0;
          // Keyframe requests (RTCP PLI) from the server, and the keyframes made.
          r.keyframeRequests = (s.pliCount || 0) + (s.firCount || 0);
          r.keyFramesEncoded = s.keyFramesEncoded || 0;
          const c = s.codecId && stats.get(s.codecId);
          if (c) r.codec = c.mimeType;
        }
      });
      if (vanish) return r;
      const base = new URL(whipUrl);
      const del = await fetch(new URL(r.location, base), { method: "DELETE", signal: AbortSignal.timeout(10000) });
      r.deleteStatus = del.status;
      pc.close();
    } catch (e) {
      r.error = String(e);
    }
    return r;
  }, { whipUrl, seconds: Number(seconds), codec, clock, vanish });
  Object.assign(result, out);
} finally {
  if (vanish) {
    console.log(JSON.stringify(result));
    // Playwright kills the browser (SIGKILL to its process group) as this process exits:
    // no DELETE, no DTLS close, no RTCP BYE.
    process.exit(0);
  }
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
