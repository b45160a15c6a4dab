// The viewer pages' player (/play/{id}, /embed/{id}). Its settings come from the page's JSON
// block (#fc-config): no inline script, so the page's CSP allows scripts from this server only.
// hls.js where the browser has Media Source Extensions, native HLS elsewhere. Controls: play,
// a scrub bar with storyboard previews, time, quality and captions menus, mute, full screen;
// for live, a live badge, "back to live" and the viewer count. A page that cannot play shows a
// notice instead, and, for a purchase, buy buttons that open the checkout with the public API.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("fc-config").textContent);
  const status = document.getElementById("status");
  const player = (window.player = {
    state: config.state, errors: [], keyLoaded: false, fatal: null, subtitleTracks: 0, ended: false,
    viewId: null, playAt: null, startupMs: null, levels: [], viewers: null, atLiveEdge: null, live: null,
    followingLive: true, liveJumps: 0,
  });
  const $ = (id) => document.getElementById(id);

  function show(state, text) {
    player.state = state;
    status.dataset.state = state;
    status.textContent = text;
  }

  // --- Buying: the tenant's publishable key makes a cart and checks it out for the viewer
  // the page's token names; the browser then goes to the provider's hosted checkout.
  if (config.checkout) {
    const buyStatus = $("buy-status");
    const call = async (path, body) => {
      const r = await fetch(path, {
        method: "POST",
        headers: { "Authorization": "Bearer " + config.checkout.key, "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(15000),
      });
      const json = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error((json.error && json.error.message) || ("HTTP " + r.status));
      return json;
    };
    // Where the provider sends the buyer back: the page that linked or embedded this one,
    // else this page without its token (a token is a credential: the provider never sees it).
    const back = () => {
      if (/^https?:/.test(document.referrer)) return document.referrer;
      const u = new URL(location.href);
      u.searchParams.delete("token");
      return u.href;
    };
    document.querySelectorAll(".fc-buy").forEach((button) => {
      button.addEventListener("click", async () => {
        document.querySelectorAll(".fc-buy").forEach((b) => { b.disabled = true; });
        buyStatus.textContent = "Opening the checkout…";
        // In an iframe the provider's page cannot be framed: it opens in a window of its own,
        // opened now, while the click still counts as the viewer's.
        const win = config.embed ? window.open("about:blank", "_blank") : null;
        try {
          const cart = await call("/v1/carts", { currency: button.dataset.currency });
          await call(`/v1/carts/${encodeURIComponent(cart.id)}/items`, { price_id: button.dataset.price, quantity: 1 });
          const checkout = await call(`/v1/carts/${encodeURIComponent(cart.id)}/checkout`, {
            provider: config.checkout.provider, playback_token: config.checkout.token,
            success_url: back(), cancel_url: back(),
          });
          player.checkout = checkout.order_id;
          if (win) { win.location.href = checkout.redirect_url; buyStatus.textContent = "The checkout opened in a new window."; }
          else location.assign(checkout.redirect_url);
        } catch (e) {
          if (win) win.close();
          buyStatus.textContent = "The checkout could not be opened: " + e.message;
          document.querySelectorAll(".fc-buy").forEach((b) => { b.disabled = false; });
        }
      });
    });
  }

  const video = $("video");
  if (!video) return;
  const src = `/hls/${config.playbackId}/master.m3u8${config.query}`;
  const stage = $("stage");
  const notice = $("notice");
  let hls = null;

  if (config.poster) {
    // Only once it is known to exist: a missing poster shows nothing rather than a broken image.
    const img = new Image();
    img.onload = () => { if (!player.playAt) video.poster = config.poster; };
    img.src = config.poster;
  }

  // The page's own measure of startup: from the play request to the first frame.
  video.addEventListener("play", () => { if (player.playAt === null) player.playAt = Date.now(); });
  video.addEventListener("playing", () => {
    if (player.startupMs === null) player.startupMs = Date.now() - player.playAt;
  }, { once: true });
  video.addEventListener("playing", () => { if (player.state !== "ended") show("playing", "playing"); });
  video.addEventListener("ended", () => { player.ended = true; show("ended", "ended"); });

  function monitor(h, viewId) {
    if (h && !viewId) return;
    const data = window.FerrocastData && FerrocastData.monitor(video, { playbackId: config.playbackId, hls: h, viewId });
    if (data) player.viewId = data.viewId;
  }

  function start() {
    notice.hidden = true;
    if (window.Hls && Hls.isSupported()) {
      // One view id for the beacons and for CMCD on every media request (query mode: no
      // preflight). None under Do Not Track: then neither beacons nor CMCD.
      const viewId = window.FerrocastData ? FerrocastData.newViewId() : null;
      const cmcd = viewId ? { sessionId: viewId, contentId: config.playbackId, useHeaders: false } : undefined;
      // CMAF streams are encrypted with common encryption: the W3C ClearKey licence of
      // this playback id, with the page's token, gives the keys (EME). TS streams use /keys.
      const licenseUrl = `/licenses/clearkey/${config.playbackId}${config.query}`;
      // Low-latency mode plays CMAF streams' LL-HLS parts; other playlists have none.
      // hls.js may start a few segments behind a low-latency edge; up to 1.5× it catches up.
      hls = new Hls({
        lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, cmcd, emeEnabled: true,
        drmSystems: { "org.w3.clearkey": { licenseUrl } },
      });
      // It speeds up only within a target duration of its target latency: a start further
      // back (waiting for the licence, the first parts), or a stall that drops it further,
      // would stay there. On a low-latency stream, until the viewer pauses or moves the
      // playhead with the controls, such a drift jumps back to the live edge (checked each
      // second). Only live playlists: hls.js measures a finished recording's "latency" from
      // its end too.
      const liveHls = hls;
      setInterval(() => {
        const level = liveHls.levels[liveHls.currentLevel];
        const lowLatency = level && level.details && level.details.live && level.details.partList;
        if (lowLatency && player.followingLive && !video.paused && liveHls.liveSyncPosition &&
            liveHls.latency > liveHls.targetLatency + 3) {
          player.liveJumps++;
          video.currentTime = liveHls.liveSyncPosition;
        }
      }, 1000);
      hls.on(Hls.Events.KEY_LOADED, () => { player.keyLoaded = true; });
      hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => qualities(data.levels));
      hls.on(Hls.Events.LEVEL_SWITCHED, () => markQuality());
      hls.on(Hls.Events.LEVEL_LOADED, (_, data) => { player.live = data.details.live; });
      hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, (_, data) => {
        player.subtitleTracks = data.subtitleTracks.length;
        captions(data.subtitleTracks.map((t) => t.name || t.lang || "Captions"));
      });
      hls.on(Hls.Events.ERROR, (_, data) => {
        player.errors.push(data.details);
        if (data.fatal) { player.fatal = data.details; show("error", "error: " + data.details); }
      });
      monitor(hls, viewId);
      hls.loadSource(src);
      hls.attachMedia(video);
      window.hls = hls;
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      monitor(null);
      video.src = src;
      video.textTracks.addEventListener("addtrack", () => {
        const tracks = Array.from(video.textTracks).filter((t) => t.kind === "subtitles" || t.kind === "captions");
        player.subtitleTracks = tracks.length;
        captions(tracks.map((t) => t.label || t.language || "Captions"));
      });
    } else {
      show("error", "this browser cannot play HLS");
      return;
    }
    video.play().catch(() => {});
  }

  // --- Menus.
  function qualities(levels) {
    player.levels = levels.map((l) => l.height);
    const select = $("quality");
    select.replaceChildren(new Option("Auto", "-1"));
    levels
      .map((l, i) => ({ i, height: l.height, bitrate: l.bitrate }))
      .sort((a, b) => b.height - a.height || b.bitrate - a.bitrate)
      .forEach((l, _, all) => {
        // Two renditions of one height (the source and an encoded one) show their bitrates.
        const kbps = `${Math.round(l.bitrate / 1000)} kb/s`;
        const twin = all.filter((o) => o.height === l.height).length > 1;
        const label = !l.height ? kbps : twin ? `${l.height}p · ${kbps}` : `${l.height}p`;
        select.append(new Option(label, String(l.i)));
      });
    $("quality-menu").hidden = levels.length < 2;
    markQuality();
  }
  function markQuality() {
    if (!hls) return;
    const auto = $("quality").options[0];
    const now = hls.levels[hls.currentLevel];
    auto.textContent = hls.autoLevelEnabled && now && now.height ? `Auto (${now.height}p)` : "Auto";
  }
  $("quality").addEventListener("change", (e) => { if (hls) hls.currentLevel = Number(e.target.value); });

  function captions(names) {
    const select = $("captions");
    select.replaceChildren(new Option("Captions off", "-1"));
    names.forEach((n, i) => select.append(new Option(n, String(i))));
    $("captions-menu").hidden = names.length === 0;
  }
  $("captions").addEventListener("change", (e) => {
    const i = Number(e.target.value);
    if (hls) {
      hls.subtitleDisplay = i >= 0;
      hls.subtitleTrack = i;
    } else {
      Array.from(video.textTracks).forEach((t, j) => { t.mode = j === i ? "showing" : "disabled"; });
    }
  });

  // --- Play, mute, full screen, time.
  const playToggle = $("play-toggle");
  playToggle.addEventListener("click", () => {
    if (video.paused) video.play().catch(() => {});
    else { player.followingLive = false; video.pause(); }
  });
  video.addEventListener("click", () => playToggle.click());
  const paint = () => {
    playToggle.classList.toggle("fc-paused", video.paused);
    playToggle.setAttribute("aria-label", video.paused ? "Play" : "Pause");
    $("mute").classList.toggle("fc-muted", video.muted);
    $("mute").setAttribute("aria-label", video.muted ? "Unmute" : "Mute");
  };
  ["play", "pause", "volumechange"].forEach((e) => video.addEventListener(e, paint));
  $("mute").addEventListener("click", () => { video.muted = !video.muted; });
  $("fullscreen").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else if (stage.requestFullscreen) stage.requestFullscreen().catch(() => {});
  });

  const clock = (s) => {
    if (!isFinite(s) || s < 0) s = 0;
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
  };
  // The scrub bar's range: the whole video, or what a live stream keeps behind its edge.
  const isLive = () => config.live && player.state !== "ended" && (hls ? player.live !== false : !isFinite(video.duration));
  const range = () => {
    if (!isLive() && isFinite(video.duration) && video.duration > 0) return [0, video.duration];
    if (video.seekable.length) return [video.seekable.start(0), video.seekable.end(video.seekable.length - 1)];
    return [0, 0];
  };
  const liveEdge = () => (hls && hls.liveSyncPosition) || (video.seekable.length ? video.seekable.end(video.seekable.length - 1) : 0);

  function tick() {
    const [from, to] = range();
    const fill = to > from ? (video.currentTime - from) / (to - from) : 0;
    $("seek-fill").style.width = (Math.min(Math.max(fill, 0), 1) * 100).toFixed(2) + "%";
    if (isLive()) {
      // Behind the point hls.js holds live playback at by more than a segment or two.
      const behind = liveEdge() - video.currentTime;
      const atEdge = behind < 5;
      player.atLiveEdge = atEdge;
      $("live-badge").hidden = false;
      $("live-badge").classList.toggle("fc-live-behind", !atEdge);
      $("back-to-live").hidden = atEdge;
      $("time").textContent = atEdge ? "live" : "-" + clock(behind);
    } else {
      $("live-badge").hidden = true;
      $("back-to-live").hidden = true;
      $("time").textContent = clock(video.currentTime) + " / " + clock(to);
    }
  }
  ["timeupdate", "durationchange", "progress", "seeked"].forEach((e) => video.addEventListener(e, tick));
  setInterval(tick, 1000);
  $("back-to-live").addEventListener("click", () => {
    player.followingLive = true;
    const edge = liveEdge();
    if (edge) video.currentTime = edge;
    video.play().catch(() => {});
  });

  // --- Seeking, with storyboard previews (VOD).
  const seek = $("seek");
  const at = (e) => {
    const box = seek.getBoundingClientRect();
    const f = Math.min(Math.max((e.clientX - box.left) / box.width, 0), 1);
    const [from, to] = range();
    return from + f * (to - from);
  };
  seek.addEventListener("click", (e) => {
    if (range()[1] > 0) { player.followingLive = false; video.currentTime = at(e); }
  });
  seek.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight") { player.followingLive = false; video.currentTime += 5; }
    else if (e.key === "ArrowLeft") { player.followingLive = false; video.currentTime -= 5; }
  });
  let cues = [];
  if (config.storyboard) {
    fetch(config.storyboard, { signal: AbortSignal.timeout(10000) })
      .then((r) => (r.ok ? r.text() : ""))
      .then((text) => { cues = parseStoryboard(text); player.storyboardCues = cues.length; })
      .catch(() => {});
  }
  function parseStoryboard(text) {
    const seconds = (t) => t.split(":").reduce((acc, p) => acc * 60 + parseFloat(p), 0);
    const out = [];
    const blocks = text.replace(/\r/g, "").split("\n\n");
    for (const block of blocks) {
      const lines = block.trim().split("\n");
      const timing = lines.findIndex((l) => l.includes("-->"));
      if (timing < 0 || !lines[timing + 1]) continue;
      const [a, b] = lines[timing].split("-->").map((s) => seconds(s.trim()));
      const m = lines[timing + 1].match(/^(.*)#xywh=(\d+),(\d+),(\d+),(\d+)$/);
      if (!m) continue;
      // Cue URLs are relative to the WebVTT's own.
      const url = new URL(m[1], new URL(config.storyboard, location.href));
      if (url.origin !== location.origin) continue;
      out.push({ from: a, to: b, url: url.href, x: +m[2], y: +m[3], w: +m[4], h: +m[5] });
    }
    return out;
  }
  seek.addEventListener("mousemove", (e) => {
    const t = at(e);
    const preview = $("preview");
    const cue = cues.find((c) => t >= c.from && t < c.to);
    const image = $("preview-image");
    if (cue) {
      image.style.width = cue.w + "px";
      image.style.height = cue.h + "px";
      image.style.backgroundImage = `url("${cue.url}")`;
      image.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
      image.hidden = false;
    } else {
      image.hidden = true;
    }
    $("preview-time").textContent = clock(t);
    const box = seek.getBoundingClientRect();
    preview.style.left = Math.min(Math.max(e.clientX - box.left, 40), box.width - 40) + "px";
    preview.hidden = range()[1] <= 0;
    player.previewShown = Boolean(cue);
  });
  seek.addEventListener("mouseleave", () => { $("preview").hidden = true; });

  // --- Viewers now (live), from the analytics realtime API.
  async function viewers() {
    try {
      const r = await fetch(`/v1/analytics/realtime/${config.playbackId}${config.query}`, { signal: AbortSignal.timeout(5000) });
      if (r.ok) {
        const n = (await r.json()).concurrent_viewers;
        player.viewers = n;
        $("viewers").textContent = n === 1 ? "1 watching" : `${n} watching`;
        $("viewers").hidden = false;
      }
    } catch (e) {}
    setTimeout(viewers, 15000);
  }

  // --- Offline: look every 5 s (each look bounded) and start when the broadcast does.
  async function waitForBroadcast() {
    try {
      const r = await fetch(src, { cache: "no-store", signal: AbortSignal.timeout(5000) });
      if (r.ok) { show("live", "loading"); start(); viewers(); return; }
    } catch (e) {}
    setTimeout(waitForBroadcast, 5000);
  }
  paint();
  if (config.live && player.state === "live") viewers();
  if (player.state === "offline") setTimeout(waitForBroadcast, 5000); else start();
})();
