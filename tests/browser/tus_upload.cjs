// Uploads a file to Ferrocast with tus-js-client (a real tus 1.0 client).
// Usage: node tus_upload.cjs FILE ENDPOINT API_KEY [STOP_AFTER_BYTES] [UPLOAD_URL]
// With STOP_AFTER_BYTES the client SIGKILLs itself once that many bytes were sent (mid-request,
// after printing its report); with UPLOAD_URL it resumes that upload from the server's offset.
// Prints one JSON line: {url, bytesSent, finished, error}.
const fs = require("fs");
const tus = require("tus-js-client");

const [file, endpoint, apiKey, stopAfter = "0", resumeUrl = ""] = process.argv.slice(2);
if (!file || !endpoint || !apiKey) {
  console.error("usage: node tus_upload.cjs FILE ENDPOINT API_KEY [STOP_AFTER_BYTES] [UPLOAD_URL]");
  process.exit(2);
}
const data = fs.readFileSync(file);
const stop = Number(stopAfter);
const result = { url: null, bytesSent: 0, finished: false, error: null };
const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: resumeUrl || null,
  chunkSize: 256 * 1024,
  retryDelays: [0, 500, 1000],
  headers: { Authorization: `Bearer ${apiKey}` },
  metadata: { filename: require("path").basename(file), playback_policy: "public" },
  uploadSize: data.length,
  storeFingerprintForResuming: false,
  onAfterResponse(req, res) {
    const url = upload.url || res.getHeader("Location");
    if (url) result.url = upload.url || url;
  },
  onProgress(sent) {
    result.bytesSent = sent;
    if (stop > 0 && sent >= stop) {
      // Killed midway, mid-request: SIGKILL, no abort, no goodbye of any kind.
      result.url = upload.url;
      fs.writeSync(1, JSON.stringify(result) + "\n");
      process.kill(process.pid, "SIGKILL");
    }
  },
  onError(err) {
    result.error = String(err);
    console.log(JSON.stringify(result));
    process.exit(1);
  },
  onSuccess() {
    result.url = upload.url;
    result.finished = true;
    console.log(JSON.stringify(result));
    process.exit(0);
  },
});
upload.start();
