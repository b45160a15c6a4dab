// Headless Debian Chromium (/usr/bin/chromium, or $CHROMIUM) as the media tests run it:
// nothing downloaded, no background traffic, autoplay allowed. `extra`: more flags.
const { chromium } = require("playwright-core");

function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    timeout: 30000,
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      ...extra,
    ],
  });
}

module.exports = { launch };
