// Prints the SDP offer Debian's Chromium makes for a sendonly audio + video connection, as
// its WHIP client would send it: the seed in tests/fixtures/webrtc/chromium_offer.sdp.
//   NODE_PATH=$BROWSER_TEST_NODE_MODULES node fuzz/capture-chromium-offer.cjs > tests/fixtures/webrtc/chromium_offer.sdp
const { launch } = require("../tests/browser/chromium.cjs");
(async () => {
  const browser = await launch();
  const page = await browser.newPage();
  await page.goto("about:blank");
  const sdp = await page.evaluate(async () => {
    const canvas = document.createElement("canvas"); canvas.width = 640; canvas.height = 360;
    canvas.getContext("2d").fillRect(0, 0, 10, 10);
    const ac = new AudioContext(); const osc = ac.createOscillator(); const dest = ac.createMediaStreamDestination(); osc.connect(dest); osc.start();
    const stream = new MediaStream([...canvas.captureStream(30).getVideoTracks(), ...dest.stream.getAudioTracks()]);
    const pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: "sendonly" });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await new Promise(r => setTimeout(r, 1500));
    return pc.localDescription.sdp;
  });
  process.stdout.write(sdp);
  await browser.close();
})();
