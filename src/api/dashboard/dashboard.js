// The dashboard's page script: calls the public /v1 API with the session cookie (sent by
// the browser) and the session's CSRF token (from the page) on every change. Everything
// shown is set as text, never as HTML. Sections: live streams, uploads (tus-js-client, with
// progress and resuming), analytics (uPlot charts), commerce, settings.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) {
    const message = data && data.error ? data.error.message : `${r.status} ${r.statusText}`;
    if (r.status === 401) location.reload(); // the session is over: back to sign-in
    throw new Error(message);
  }
  return data;
}

/// Every item of a paged list (at most `max`).
async function all(path, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", path + sep + "limit=100" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    items.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

function showError(e) {
  const p = $("error");
  p.textContent = e ? String(e.message || e) : "";
  p.hidden = !e;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function copyCell(value, label) {
  const td = document.createElement("td");
  const code = document.createElement("code");
  code.textContent = value;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.setAttribute("aria-label", `Copy the ${label}`);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value);
      button.textContent = "Copied";
    } catch (e) {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  td.append(code, " ", button);
  return td;
}

function button(label, onClick, className = "copy") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.addEventListener("click", async () => {
    showError(null);
    try { await onClick(); } catch (e) { showError(e); }
  });
  return b;
}

function actions(...buttons) {
  const td = document.createElement("td");
  td.className = "actions";
  td.append(...buttons);
  return td;
}

function showSecret(label, value) {
  $("secret-label").textContent = label;
  $("secret-value").textContent = value;
  $("secret").hidden = false;
}

function linkCell(href, text) {
  const td = document.createElement("td");
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  td.append(a);
  return td;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const duration = (s) => {
  if (s == null) return "";
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return `${m}:${String(sec).padStart(2, "0")}`;
};
// Minor units as the currency writes them: 999 EUR → €9.99.
const money = (amount, currency) => {
  const c = currency.toUpperCase();
  const digits = new Intl.NumberFormat("en", { style: "currency", currency: c }).resolvedOptions().maximumFractionDigits;
  return new Intl.NumberFormat(undefined, { style: "currency", currency: c }).format(amount / 10 ** digits);
};

// --- Sections: one shown at a time, named in the URL's fragment.
const loaded = {};
const loaders = {};
function showTab() {
  const name = (location.hash || "#live").slice(1);
  const tab = loaders[name] ? name : "live";
  document.querySelectorAll("section.tab").forEach((s) => { s.hidden = s.id !== tab; });
  document.querySelectorAll("nav.tabs a").forEach((a) => a.classList.toggle("current", a.dataset.tab === tab));
  showError(null);
  loaded[tab] = loaders[tab]().then(() => true, (e) => { showError(e); return false; });
  window.dashboard.loaded = loaded;
  return loaded[tab];
}
window.addEventListener("hashchange", showTab);

// --- Live streams.
loaders.live = async () => {
  const streams = await all("/v1/live-streams");
  $("streams").querySelector("tbody").replaceChildren(...streams.map((s) => {
    const i = s.ingest || {};
    const ingest = [
      i.video_codec, i.width && i.height ? `${i.width}×${i.height}` : null, i.fps ? `${Math.round(i.fps)} fps` : null,
      i.video_bitrate_kbps ? `${Math.round(i.video_bitrate_kbps)} kb/s` : null,
      Array.isArray(i.renditions) && i.renditions.length ? `${i.renditions.length} renditions` : null,
    ].filter(Boolean).join(" · ");
    const reset = document.createElement("button");
    reset.type = "button";
    reset.className = "copy";
    reset.textContent = "Reset key";
    reset.addEventListener("click", async () => {
      if (!confirm("A new stream key disconnects the current publisher. Reset it?")) return;
      try { await api("POST", `/v1/live-streams/${encodeURIComponent(s.id)}/reset-stream-key`); await loaders.live(); } catch (e) { showError(e); }
    });
    const cells = document.createElement("td");
    cells.className = "actions";
    cells.append(reset, " ", button("Chat", () => openChat(s)));
    const tr = row(
      cell(s.status, "status " + s.status),
      linkCell("/play/" + encodeURIComponent(s.playback_id), s.playback_id),
      copyCell(s.rtmp_url, "RTMP URL"),
      copyCell(s.stream_key, "stream key"),
      copyCell(`${location.origin}/whip/${s.stream_key}`, "WHIP URL"),
      cell(ingest, "muted"),
      cells,
    );
    tr.dataset.id = s.id;
    return tr;
  }));
  $("live-empty").hidden = streams.length > 0;
  $("streams").hidden = streams.length === 0;
};

$("create-stream").addEventListener("click", async () => {
  showError(null);
  try {
    await api("POST", "/v1/live-streams", {});
    await loaders.live();
  } catch (e) {
    showError(e);
  }
});

// --- A stream's chat: its rules, its messages (hide, time out, ban), its bans.
let chatStream = null;
async function openChat(stream) {
  chatStream = stream;
  $("chat-title").textContent = `Chat of ${stream.playback_id}`;
  $("chat-panel").hidden = false;
  await loadChat();
  $("chat-panel").scrollIntoView({ block: "start" });
}

async function loadChat() {
  const id = encodeURIComponent(chatStream.id);
  const [rules, messages, bans] = await Promise.all([
    api("GET", `/v1/live-streams/${id}/chat/rules`),
    // Oldest first: the newest 100 are the last of them (up to 5000).
    all(`/v1/live-streams/${id}/chat/messages`, 5000),
    api("GET", `/v1/live-streams/${id}/chat/bans`),
  ]);
  $("chat-slow").value = rules.slow_mode_s;
  $("chat-entitled").checked = rules.entitled_only;
  $("chat-moderators").value = rules.moderators.join(", ");
  const ban = (m, duration_s) => api("POST", `/v1/live-streams/${id}/chat/bans`, duration_s ? { message_id: m.id, duration_s } : { message_id: m.id }).then(loadChat);
  $("chat-messages-table").querySelector("tbody").replaceChildren(...messages.slice(-100).reverse().map((m) => {
    const tr = row(cell(when(m.at), "muted"), cell(m.name), cell(m.text, m.hidden ? "hidden-message" : ""),
      m.hidden ? cell("hidden", "muted") : actions(
        button("Hide", () => api("POST", `/v1/live-streams/${id}/chat/messages/${encodeURIComponent(m.id)}/hide`).then(loadChat)),
        button("Time out 10 min", () => ban(m, 600)),
        button("Ban", () => ban(m)),
      ));
    tr.dataset.id = m.id;
    return tr;
  }));
  $("chat-bans").querySelector("tbody").replaceChildren(...bans.map((b) => row(
    cell(b.name), cell(b.until ? when(b.until) : "banned"), cell(b.reason || "", "muted"),
    actions(button("Lift", () => api("DELETE", `/v1/live-streams/${id}/chat/bans/${encodeURIComponent(b.id)}`).then(loadChat))),
  )));
}

$("chat-close").addEventListener("click", () => { $("chat-panel").hidden = true; chatStream = null; });
$("chat-rules-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  try {
    await api("PUT", `/v1/live-streams/${encodeURIComponent(chatStream.id)}/chat/rules`, {
      slow_mode_s: Number($("chat-slow").value) || 0,
      entitled_only: $("chat-entitled").checked,
      moderators: $("chat-moderators").value.split(",").map((m) => m.trim()).filter(Boolean),
    });
    await loadChat();
  } catch (err) {
    showError(err);
  }
});

// --- Uploads: tus (resumable, resuming after a reload), progress, then the asset's own
// processing progress over Server-Sent Events.
// At most a few streams at once: a browser holds six connections to a server.
const watching = new Map();
const MAX_WATCHED = 3;
function watchAsset(asset) {
  if (watching.has(asset.id) || watching.size >= MAX_WATCHED) return;
  // An upload still arriving is followed only while recent: an abandoned one never ends.
  const recent = Date.now() - Date.parse(asset.created_at) < 3600 * 1000;
  if (!(asset.status === "queued" || asset.status === "processing" || (asset.status === "uploading" && recent))) return;
  const events = new EventSource(`/v1/assets/${encodeURIComponent(asset.id)}/events`);
  watching.set(asset.id, events);
  events.addEventListener("asset", (e) => {
    const a = JSON.parse(e.data);
    const tr = document.querySelector(`#assets tr[data-id="${CSS.escape(a.id)}"]`);
    if (tr) tr.replaceWith(assetRow(a));
    if (a.status === "ready" || a.status === "errored") {
      events.close();
      watching.delete(a.id);
      if (a.filename && $("upload-name").textContent === a.filename) $("upload-percent").textContent = `100 % · ${a.status}`;
      // Others waiting their turn to be followed.
      if (document.querySelector('#assets tr[data-status="queued"], #assets tr[data-status="processing"], #assets tr[data-status="uploading"]')) loaders.uploads().catch(showError);
    }
  });
  events.addEventListener("error", () => { events.close(); watching.delete(asset.id); });
}

function assetRow(a) {
  const thumb = document.createElement("td");
  if (a.status === "ready") {
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = "";
    const src = `/thumbnails/${encodeURIComponent(a.playback_id)}.jpg?width=160`;
    if (a.playback_policy === "public") img.src = src;
    else {
      // A signed asset's thumbnail needs a token: a short one for thumbnails only.
      api("POST", "/v1/playback-tokens", { playback_id: a.playback_id, audience: "t", expires_in: 600 })
        .then((t) => { img.src = `${src}&token=${encodeURIComponent(t.token)}`; }, () => {});
    }
    thumb.append(img);
  }
  const status = a.status === "processing" && a.progress != null ? `processing ${Math.round(a.progress)} %` : a.status;
  const subtitles = a.status === "ready" ? actions(button("Add subtitles", () => addSubtitles(a))) : cell("");
  const tr = row(
    thumb,
    cell(status, "status " + a.status),
    cell(a.filename || (a.source === "live" ? "recording" : "")),
    cell(duration(a.duration_s)),
    linkCell("/play/" + encodeURIComponent(a.playback_id), a.playback_id),
    cell(when(a.created_at), "muted"),
    subtitles,
  );
  tr.dataset.id = a.id;
  tr.dataset.status = a.status;
  return tr;
}

loaders.uploads = async () => {
  const assets = await all("/v1/assets", 500);
  $("assets").querySelector("tbody").replaceChildren(...assets.map(assetRow));
  $("assets-empty").hidden = assets.length > 0;
  assets.forEach(watchAsset);
};

/// A subtitle file (SRT or WebVTT) for asset `a`, in the language the creator names.
function addSubtitles(a) {
  const input = document.createElement("input");
  input.type = "file";
  input.accept = ".vtt,.srt,text/vtt";
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    const language = (prompt("Language of these subtitles (BCP 47, e.g. en, fr, pt-BR)", "en") || "").trim();
    if (!language) return;
    try {
      if (file.size > 2 * 1024 * 1024) throw new Error("a subtitle file is at most 2 MiB");
      const track = await api("POST", `/v1/assets/${encodeURIComponent(a.id)}/subtitles`, { language, content: await file.text() });
      $("upload-percent").textContent = `subtitles added: ${track.language || language}`;
    } catch (e) {
      showError(e);
    }
  });
  input.click();
}

async function upload(file) {
  showError(null);
  if (!window.tus) { showError("the upload library is not installed on this server (run make)"); return; }
  const box = $("upload");
  box.hidden = false;
  $("upload-name").textContent = file.name;
  const progress = $("upload-progress");
  window.dashboard.progress = [];
  const options = {
    endpoint: "/v1/uploads",
    chunkSize: 8 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    metadata: { filename: file.name, filetype: file.type || "application/octet-stream", playback_policy: "public" },
    headers: { "X-CSRF-Token": csrf },
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onProgress(sent, total) {
      const percent = total ? (sent / total) * 100 : 0;
      progress.value = percent;
      $("upload-percent").textContent = `${Math.floor(percent)} %`;
      window.dashboard.progress.push(percent);
    },
    onError(e) { showError(e); },
    async onSuccess() {
      progress.value = 100;
      $("upload-percent").textContent = "100 % · processing";
      window.dashboard.uploaded = (window.dashboard.uploaded || 0) + 1;
      await loaders.uploads().catch(showError);
    },
  };
  const up = new tus.Upload(file, options);
  // The same file again (after a reload): carry on where it stopped.
  const previous = await up.findPreviousUploads();
  if (previous.length) up.resumeFromPreviousUpload(previous[0]);
  up.start();
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
});

// --- Analytics.
const charts = {};
function chart(id, label, points, timeframe) {
  const el = $(id);
  if (charts[id]) { charts[id].destroy(); delete charts[id]; }
  el.replaceChildren();
  if (!points.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No data in this timeframe yet.";
    el.append(p);
    return;
  }
  if (!window.uPlot) { el.textContent = "The chart library is not installed on this server (run make)."; return; }
  const xs = points.map((p) => Date.parse(p.time) / 1000);
  const ys = points.map((p) => p.value);
  charts[id] = new uPlot({
    width: Math.max(el.clientWidth, 320), height: 220,
    // The whole timeframe on the axis, however few points have data.
    scales: { x: { time: true, range: [Date.parse(timeframe.from) / 1000, Date.parse(timeframe.to) / 1000] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.2)] } },
    axes: [{ stroke: "#8b93a7", grid: { stroke: "#262b36" } }, { stroke: "#8b93a7", grid: { stroke: "#262b36" } }],
    series: [{}, { label, stroke: "#ff5a36", fill: "rgba(255,90,54,.15)", width: 2, points: { show: true } }],
  }, [xs, ys], el);
  el.dataset.points = String(points.length);
}

function card(label, value) {
  const div = document.createElement("div");
  div.className = "card";
  const v = document.createElement("strong");
  v.textContent = value;
  const l = document.createElement("span");
  l.textContent = label;
  div.append(v, l);
  return div;
}

loaders.analytics = async () => {
  const tf = $("timeframe").value;
  const overall = (metric) => api("GET", `/v1/analytics/metrics/${metric}/overall?timeframe=${tf}`);
  const [views, watch, p50, p95, rebuffer] = await Promise.all(
    ["views", "watch_time", "video_startup_time", "video_startup_time_p95", "rebuffer_percentage"].map(overall));
  const ms = (v) => (v.value == null ? "–" : `${Math.round(v.value)} ms`);
  $("cards").replaceChildren(
    card("views", String(views.views)),
    card("watch time", watch.value == null ? "–" : watch.value >= 3600000 ? `${(watch.value / 3600000).toFixed(1)} h` : `${Math.round(watch.value / 60000)} min ${Math.round((watch.value % 60000) / 1000)} s`),
    card("startup p50", ms(p50)),
    card("startup p95", ms(p95)),
    card("rebuffering", rebuffer.value == null ? "–" : `${(rebuffer.value * 100).toFixed(2)} %`),
  );
  await overTime();
  const peaks = await api("GET", `/v1/analytics/concurrency?timeframe=${tf}&granularity=hour`);
  chart("concurrency-chart", "peak viewers", peaks.data.map((p) => ({ time: p.time, value: p.peak_concurrent_viewers })), peaks.timeframe);
  await retentionAssets();
  for (const [dimension, table] of [["country", "countries"], ["device_type", "devices"]]) {
    const b = await api("GET", `/v1/analytics/metrics/views/breakdown?timeframe=${tf}&group_by=${dimension}`);
    $(table).querySelector("tbody").replaceChildren(...b.data.slice(0, 10).map((g) =>
      row(cell(g.dimensions[dimension] || "unknown"), cell(g.views))));
  }
};
$("timeframe").addEventListener("change", showTab);

/// The chosen metric per hour (views: their count).
async function overTime() {
  const metric = $("metric").value;
  const series = await api("GET", `/v1/analytics/metrics/${metric}/timeseries?timeframe=${$("timeframe").value}&granularity=hour`);
  const points = series.data.filter((p) => p.views > 0 && (metric === "views" || p.value != null))
    .map((p) => ({ time: p.time, value: metric === "views" ? p.views : p.value }));
  chart("views-chart", $("metric").selectedOptions[0].textContent, points, series.timeframe);
}
$("metric").addEventListener("change", () => overTime().catch(showError));

async function retentionAssets() {
  const select = $("retention-asset");
  const assets = (await all("/v1/assets", 200)).filter((a) => a.status === "ready");
  const keep = select.value;
  select.replaceChildren(...assets.map((a) => new Option(a.filename || a.playback_id, a.playback_id)));
  if (keep && assets.some((a) => a.playback_id === keep)) select.value = keep;
  await retention();
}

async function retention() {
  const el = $("retention-chart");
  const id = $("retention-asset").value;
  if (charts["retention-chart"]) { charts["retention-chart"].destroy(); delete charts["retention-chart"]; }
  el.replaceChildren();
  if (!id) { el.textContent = "No ready asset yet."; return; }
  const r = await api("GET", `/v1/analytics/retention/${encodeURIComponent(id)}?timeframe=${$("timeframe").value}`);
  if (!r.data.length || !window.uPlot) { el.textContent = r.data.length ? "The chart library is not installed (run make)." : "No view of this asset in this timeframe yet."; return; }
  charts["retention-chart"] = new uPlot({
    width: Math.max(el.clientWidth, 320), height: 200,
    scales: { x: { time: false, range: [0, 100] }, y: { range: [0, 1] } },
    axes: [{ stroke: "#8b93a7", grid: { stroke: "#262b36" }, values: (u, v) => v.map((x) => x + " %") },
      { stroke: "#8b93a7", grid: { stroke: "#262b36" }, values: (u, v) => v.map((x) => Math.round(x * 100) + " %") }],
    series: [{ label: "position" }, { label: `still watching (of ${r.views})`, stroke: "#3ecf8e", fill: "rgba(62,207,142,.15)", width: 2 }],
  }, [r.data.map((p) => p.percent), r.data.map((p) => p.share)], el);
  el.dataset.points = String(r.data.length);
}
$("retention-asset").addEventListener("change", () => retention().catch(showError));

// --- Commerce.
loaders.commerce = async () => {
  const [products, prices, orders, codes] = await Promise.all([all("/v1/products"), all("/v1/prices"), all("/v1/orders", 200), all("/v1/discount-codes", 200)]);
  $("codes").querySelector("tbody").replaceChildren(...codes.map((c) => row(
    cell(c.code), cell(c.percent_off ? `${c.percent_off} %` : c.amount_off != null ? money(c.amount_off, c.currency) : ""),
    cell(c.times_redeemed), cell(c.ends_at ? when(c.ends_at) : "never", "muted"))));
  $("products").querySelector("tbody").replaceChildren(...products.map((p) => row(
    cell(p.name),
    cell(p.all_content ? "all content" : p.playback_ids.join(", "), "muted"),
    cell(prices.filter((x) => x.product_id === p.id).map((x) => money(x.unit_amount, x.currency) + (x.type === "one_time" ? "" : ` (${x.type})`)).join(", ")),
    cell(p.id, "muted"),
  )));
  $("orders").querySelector("tbody").replaceChildren(...orders.map((o) => row(
    cell(o.status), cell(money(o.total, o.currency)), cell(o.customer_id, "muted"), cell(when(o.created_at), "muted"),
    o.status === "paid" ? actions(button("Refund", async () => {
      if (!confirm(`Refund ${money(o.total, o.currency)} in full? The buyer loses access at once.`)) return;
      await api("POST", `/v1/orders/${encodeURIComponent(o.id)}/refunds`, {});
      await loaders.commerce();
    })) : cell(""))));
  const paid = orders.filter((o) => o.status === "paid");
  const byCurrency = {};
  paid.forEach((o) => { byCurrency[o.currency] = (byCurrency[o.currency] || 0) + o.total; });
  $("revenue").textContent = Object.keys(byCurrency).length
    ? "Paid: " + Object.entries(byCurrency).map(([c, t]) => money(t, c)).join(" · ")
    : "No paid order yet";
};

$("product-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  try {
    const currency = $("product-currency").value.trim().toLowerCase();
    const digits = new Intl.NumberFormat("en", { style: "currency", currency: currency.toUpperCase() }).resolvedOptions().maximumFractionDigits;
    const amount = Math.round(Number($("product-amount").value.replace(",", ".")) * 10 ** digits);
    if (!Number.isFinite(amount) || amount < 0) throw new Error("the price must be a number");
    const ids = $("product-playback-ids").value.split(",").map((s) => s.trim()).filter(Boolean);
    const product = await api("POST", "/v1/products", ids.length ? { name: $("product-name").value, playback_ids: ids } : { name: $("product-name").value, all_content: true });
    await api("POST", "/v1/prices", { product_id: product.id, type: "one_time", unit_amount: amount, currency });
    e.target.reset();
    $("product-currency").value = currency;
    await loaders.commerce();
  } catch (err) {
    showError(err);
  }
});

$("code-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  try {
    await api("POST", "/v1/discount-codes", { code: $("code-code").value.trim(), percent_off: $("code-percent").value.trim() });
    e.target.reset();
    await loaders.commerce();
  } catch (err) {
    showError(err);
  }
});

// --- Settings.
loaders.settings = async () => {
  const [keys, signing, hooks, branding] = await Promise.all([all("/v1/api-keys"), api("GET", "/v1/signing-keys"),
    all("/v1/webhook-endpoints"), api("GET", "/v1/branding")]);
  $("keys").querySelector("tbody").replaceChildren(...keys.filter((k) => !k.revoked_at).map((k) =>
    row(cell(k.name), cell(k.prefix + "…", "muted"), cell(when(k.created_at), "muted"), cell(when(k.last_used_at), "muted"),
      actions(button("Revoke", async () => {
        if (!confirm(`Revoke ${k.name} (${k.prefix}…)? Whatever uses it stops working at once; revoking the key you signed in with signs you out.`)) return;
        await api("DELETE", `/v1/api-keys/${encodeURIComponent(k.id)}`);
        await loaders.settings();
      })))));
  const signingKeys = Array.isArray(signing) ? signing : signing.data || [];
  $("signing-keys").querySelector("tbody").replaceChildren(...signingKeys.filter((k) => !k.revoked_at).map((k) =>
    row(cell(k.id, "muted"), cell(k.algorithm), cell(when(k.created_at), "muted"),
      actions(button("Revoke", async () => {
        if (!confirm("Revoke this signing key? Tokens it signed stop working.")) return;
        await api("DELETE", `/v1/signing-keys/${encodeURIComponent(k.id)}`);
        await loaders.settings();
      })))));
  $("webhooks").querySelector("tbody").replaceChildren(...hooks.map((h) =>
    row(cell(h.url), cell(h.events.join(", "), "muted"), cell(h.enabled ? "yes" : "no"),
      actions(button("Delete", async () => {
        if (!confirm(`Stop sending events to ${h.url}?`)) return;
        await api("DELETE", `/v1/webhook-endpoints/${encodeURIComponent(h.id)}`);
        await loaders.settings();
      })))));
  $("brand-name").value = branding.name || "";
  $("brand-accent").value = branding.accent || "#ff5a36";
  $("brand-css").value = branding.custom_css || "";
};

$("create-key").addEventListener("click", async () => {
  showError(null);
  try {
    const name = (prompt("A name for the new key", "server") || "").trim();
    if (!name) return;
    const created = await api("POST", "/v1/api-keys", { name });
    showSecret(`API key "${name}":`, created.api_key);
    await loaders.settings();
  } catch (e) {
    showError(e);
  }
});

$("create-signing-key").addEventListener("click", async () => {
  showError(null);
  try {
    const created = await api("POST", "/v1/signing-keys", { algorithm: "ES256" });
    showSecret(`Private key ${created.id} (PKCS#8 PEM):`, created.private_key);
    await loaders.settings();
  } catch (e) {
    showError(e);
  }
});

$("webhook-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  try {
    const created = await api("POST", "/v1/webhook-endpoints", { url: $("webhook-url").value.trim(), events: ["*"] });
    showSecret("Signing secret of the endpoint:", created.secret);
    e.target.reset();
    await loaders.settings();
  } catch (err) {
    showError(err);
  }
});

$("branding-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  try {
    const current = await api("GET", "/v1/branding");
    const { dropped, ...kept } = current;
    const body = { ...kept, name: $("brand-name").value.trim() || null, accent: $("brand-accent").value, custom_css: $("brand-css").value };
    Object.keys(body).forEach((k) => { if (body[k] === null) delete body[k]; });
    const saved = await api("PUT", "/v1/branding", body);
    $("brand-css").value = saved.custom_css;
    $("brand-result").textContent = saved.dropped.length ? "Saved. Dropped: " + saved.dropped.join("; ") : "Saved.";
  } catch (err) {
    showError(err);
  }
});

window.dashboard = { loaded };
window.dashboard.ready = showTab();
