// The dashboard's page script: calls the public /v1 API with the session cookie (sent by
// the browser) and the session's CSRF token (from the page) on every change. Everything
// shown is set as text, never as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

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

function showError(e) {
  const p = document.getElementById("error");
  p.textContent = e ? String(e.message || e) : "";
  p.hidden = !e;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
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

async function loadStreams() {
  const tbody = document.querySelector("#streams tbody");
  const streams = [];
  let cursor = null;
  do {
    const page = await api("GET", "/v1/live-streams?limit=100" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    streams.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && streams.length < 1000);
  tbody.replaceChildren(...streams.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    const play = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/play/" + encodeURIComponent(s.playback_id);
    link.textContent = s.playback_id;
    play.append(link);
    tr.append(
      cell(s.status, "status " + s.status),
      play,
      copyCell(s.rtmp_url, "RTMP URL"),
      copyCell(s.stream_key, "stream key"),
      cell(s.ingest && s.ingest.video_codec ? `${s.ingest.video_codec} ${s.ingest.width || ""}×${s.ingest.height || ""}` : "", "muted"),
    );
    return tr;
  }));
  document.getElementById("live-empty").hidden = streams.length > 0;
  document.getElementById("streams").hidden = streams.length === 0;
}

document.getElementById("create-stream").addEventListener("click", async () => {
  showError(null);
  try {
    await api("POST", "/v1/live-streams", {});
    await loadStreams();
  } catch (e) {
    showError(e);
  }
});

window.dashboard = { ready: loadStreams().then(() => true, (e) => { showError(e); return false; }) };
