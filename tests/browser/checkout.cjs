// A viewer buys in headless Chromium, as a creator's page would let them: with the tenant's
// publishable key the page makes a cart, puts a price in, applies a code and checks out; the
// browser follows the redirect to the provider's hosted checkout, clicks Pay, and comes back
// to the success URL. Usage: node checkout.cjs BASE_URL PUBLISHABLE_KEY PRICE_ID CODE EMAIL [PROVIDER]
// Prints one JSON line: {cart (as priced before checkout), checkout (order_id, customer_id,
// redirect_url, total), hosted (the checkout page's heading), landed (the URL it came back
// to), error}. PROVIDER (default stripe) is the checkout's provider.
const { launch } = require("./chromium.cjs");

(async () => {
const [base, key, priceId, code, email, provider = "stripe"] = process.argv.slice(2);
const browser = await launch();
const result = { cart: null, checkout: null, hosted: null, landed: null, error: null };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(base + "/healthz");
  Object.assign(result, await page.evaluate(async ({ key, priceId, code, email, provider }) => {
    const call = async (method, path, body) => {
      const r = await fetch(path, {
        method,
        headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const json = await r.json();
      if (!r.ok) throw new Error(method + " " + path + ": " + r.status + " " + JSON.stringify(json));
      return json;
    };
    const cart = await call("POST", "/v1/carts", { currency: "eur", country: "DE" });
    await call("POST", `/v1/carts/${cart.id}/items`, { price_id: priceId, quantity: 1 });
    const priced = await call("POST", `/v1/carts/${cart.id}/discount`, { code });
    const checkout = await call("POST", `/v1/carts/${cart.id}/checkout`, {
      provider, email,
      success_url: location.origin + "/healthz?paid=" + cart.id,
      cancel_url: location.origin + "/healthz?canceled=" + cart.id,
    });
    return { cart: priced, checkout };
  }, { key, priceId, code, email, provider }));
  await page.goto(result.checkout.redirect_url);
  result.hosted = await page.textContent("h1");
  await Promise.all([
    page.waitForURL((u) => u.toString().includes("paid="), { timeout: 20000 }),
    page.click("#pay"),
  ]);
  result.landed = page.url();
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
