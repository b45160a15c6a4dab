// Opens viewer pages that cannot play, in headless Chromium, and reports what each shows.
// Usage: node viewer_states.cjs BASE_URL CASES_JSON SCREENSHOT_DIR
// CASES_JSON: [{name, path, headers?, buy?}]. For each: the HTTP status, the notice's state,
// title and text, the buy buttons, and a screenshot NAME.png. A case with `buy` clicks the
// first buy button and follows the page to the provider's hosted checkout (its heading and
// URL are reported). Problems (page errors, CSP violations) are collected.
// Prints one JSON line: {cases: {NAME: {...}}, problems, error}.
const { launch } = require("./chromium.cjs");

(async () => {
const [base, casesJson, shots] = process.argv.slice(2);
const browser = await launch();
const result = { cases: {}, problems: [], error: null };
try {
  for (const c of JSON.parse(casesJson)) {
    const context = await browser.newContext({ viewport: { width: 960, height: 540 }, extraHTTPHeaders: c.headers || {} });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    page.on("pageerror", (e) => result.problems.push(c.name + ": " + String(e)));
    page.on("console", (m) => {
      if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) result.problems.push(c.name + ": " + m.text());
    });
    const response = await page.goto(base + c.path);
    const seen = await page.evaluate(() => {
      const notice = document.getElementById("notice");
      const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
      return {
        state: notice ? notice.dataset.state || null : null,
        title: notice ? notice.querySelector("h1").textContent : null,
        text: notice ? notice.querySelector("p").textContent : null,
        status: text("status"),
        offers: Array.from(document.querySelectorAll("#offers li")).map((li) => li.textContent),
        buttons: document.querySelectorAll(".fc-buy").length,
        video: Boolean(document.getElementById("video")),
        playerState: window.player ? window.player.state : null,
      };
    });
    seen.httpStatus = response.status();
    await page.screenshot({ path: `${shots}/viewer-${c.name}.png` });
    if (c.buy) {
      await Promise.all([
        page.waitForURL((u) => !u.toString().startsWith(base), { timeout: 20000 }),
        page.click(".fc-buy"),
      ]);
      seen.checkoutUrl = page.url();
      seen.hosted = await page.textContent("h1");
    }
    result.cases[c.name] = seen;
    await context.close();
  }
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
