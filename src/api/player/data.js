// Ferrocast Data: reports what a viewer's player does to Ferrocast (POST /v1/beacons), to
// become a view with Mux Data's metrics. No build step, no dependency, no cookie: the viewer
// id is a random id in localStorage, and Do Not Track is respected.
//
//   <script src="/player/ferrocast-data.js"></script>
//   const viewId = FerrocastData.newViewId();
//   const hls = new Hls({ cmcd: { sessionId: viewId, contentId: playbackId } });
//   const monitor = FerrocastData.monitor(video, { playbackId, hls, viewId, sampleRate: 1 });
//
// With the same view id as hls.js's CMCD session id, the beacons and the CMCD on media
// requests feed one view.
//
// Events carry the view id, a sequence number, the viewer's clock and the playhead. They go
// in batches (300 events at most), at once on play, error, ended and viewend, else every
// 10 s; a batch the server could not take (5xx, 429, network) is retried with backoff. The
// last batch, on pagehide, goes by navigator.sendBeacon.
(function () {
  "use strict";
  var MAX_EVENTS = 300;
  var HEARTBEAT_MS = 10000;
  var MIN_STALL_MS = 250;
  // After this long without an event the server has ended the view: a new one begins.
  var VIEW_TIMEOUT_MS = 60 * 60 * 1000;

  function tracking() {
    return !(navigator.doNotTrack === "1" || window.doNotTrack === "1");
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function viewerId() {
    try {
      var v = localStorage.getItem("ferrocast_viewer");
      if (!v) {
        v = randomId();
        localStorage.setItem("ferrocast_viewer", v);
      }
      return v;
    } catch (e) {
      return undefined; // storage blocked: views without a viewer
    }
  }

  // What failed, from an hls.js error's details.
  function context(details) {
    if (/^key/i.test(details)) return "key";
    if (/^(manifest|level|audioTrack|subtitleTrack)/i.test(details)) return "manifest";
    if (/^frag/i.test(details)) return "segment";
    return "media";
  }

  function monitor(video, options) {
    options = options || {};
    if (!tracking()) return null;
    var rate = options.sampleRate == null ? 1 : options.sampleRate;
    // A view id given was sampled when it was made.
    if (!options.viewId && Math.random() >= rate) return null;
    var url = options.beaconUrl || "/v1/beacons";
    var viewer = viewerId();
    // A view id given (the one hls.js sends as CMCD sid) joins both sources in one view.
    var given = /^[A-Za-z0-9_-]{8,64}$/.test(options.viewId || "") ? options.viewId : null;
    var view = { id: given || randomId(), seq: 0, queue: [], over: false, last: Date.now() };
    var started = false, firstFrame = false, seeking = false;
    var stallAt = null, stallSent = false, stallTimer = null;

    function emit(type, extra, now) {
      if (view.over) return;
      if (Date.now() - view.last > VIEW_TIMEOUT_MS) {
        // Back after the view timed out: what follows is a new view.
        flush(false);
        view = { id: randomId(), seq: 0, queue: [], over: false, last: Date.now() };
        started = false;
        firstFrame = false;
      }
      view.last = Date.now();
      var e = {
        seq: ++view.seq, type: type, t: Date.now(),
        playhead_ms: Math.max(0, Math.round((video.currentTime || 0) * 1000)),
      };
      var date = programDate();
      if (date) e.program_date_ms = date;
      for (var k in extra || {}) if (extra[k] !== undefined && extra[k] !== null) e[k] = extra[k];
      view.queue.push(e);
      if (now || view.queue.length >= MAX_EVENTS) flush(false);
    }

    // Live: the wall-clock time of the frame shown (EXT-X-PROGRAM-DATE-TIME), from hls.js or
    // from Safari's native player; null for VOD or when the playlist carries none.
    function programDate() {
      var at = null;
      if (options.hls && options.hls.playingDate) at = options.hls.playingDate.getTime();
      else if (video.getStartDate) {
        var start = video.getStartDate().getTime();
        if (!isNaN(start)) at = start + Math.round((video.currentTime || 0) * 1000);
      }
      return at && isFinite(at) ? Math.round(at) : null;
    }

    function size() {
      return { player_w: Math.round(video.clientWidth), player_h: Math.round(video.clientHeight) };
    }

    function body(events) {
      var player = { name: options.playerName || "ferrocast-data", version: "1" };
      var batch = { view_id: view.id, playback_id: options.playbackId, player: player, events: events };
      if (viewer) batch.viewer_id = viewer;
      return JSON.stringify(batch);
    }

    function send(text, attempt) {
      fetch(url, { method: "POST", body: text, headers: { "Content-Type": "text/plain" }, keepalive: text.length < 60000 })
        .then(function (r) { if (r.status >= 500 || r.status === 429) throw new Error("retry"); })
        .catch(function () {
          if (attempt < 6) setTimeout(function () { send(text, attempt + 1); }, Math.min(30000, 1000 * Math.pow(2, attempt)));
        });
    }

    function flush(leaving) {
      while (view.queue.length) {
        var text = body(view.queue.splice(0, MAX_EVENTS));
        if (leaving && navigator.sendBeacon && navigator.sendBeacon(url, new Blob([text], { type: "text/plain" }))) continue;
        send(text, 0);
      }
    }

    function endStall() {
      clearTimeout(stallTimer);
      if (stallAt !== null && stallSent) emit("rebufferend");
      stallAt = null;
      stallSent = false;
    }

    emit("viewinit", size());
    video.addEventListener("play", function () {
      if (!started) {
        started = true;
        emit("play", size(), true);
      } else {
        emit("play");
      }
    });
    video.addEventListener("playing", function () {
      if (!firstFrame) {
        firstFrame = true;
        emit("playing", size());
      } else {
        endStall();
        emit("playing");
      }
    });
    video.addEventListener("timeupdate", function () { if (stallAt !== null && !video.paused) endStall(); });
    video.addEventListener("waiting", function () {
      // Before the first frame it is startup; during a seek it is the seek's.
      if (!firstFrame || seeking || stallAt !== null) return;
      stallAt = Date.now();
      stallTimer = setTimeout(function () {
        stallSent = true;
        emit("rebufferstart", { t: stallAt });
      }, MIN_STALL_MS);
    });
    video.addEventListener("pause", function () { if (!video.ended) { endStall(); emit("pause"); } });
    video.addEventListener("seeking", function () { seeking = true; clearTimeout(stallTimer); stallAt = null; emit("seeking"); });
    video.addEventListener("seeked", function () { seeking = false; emit("seeked"); });
    video.addEventListener("ended", function () { endStall(); emit("ended", null, true); });
    video.addEventListener("resize", function () {
      if (!options.hls) emit("renditionchange", { width: video.videoWidth, height: video.videoHeight });
    });
    video.addEventListener("error", function () {
      if (options.hls) return; // hls.js reports its own
      var err = video.error || {};
      emit("error", { code: "media_error_" + (err.code || 0), message: err.message || "", fatal: true, context: "media" }, true);
    });
    if (options.hls && window.Hls) {
      var hls = options.hls;
      hls.on(Hls.Events.LEVEL_SWITCHED, function (_, data) {
        var level = hls.levels && hls.levels[data.level];
        if (level) emit("renditionchange", { bitrate: level.bitrate, width: level.width, height: level.height });
      });
      // Key fetch time before the first frame (what startup waits for): from hls.js asking
      // for a key (or licence) to having it, one request per key URI at a time. Later ones
      // are not reported (hls.js asks again for every segment, answered from its cache).
      var keyAsked = {};
      var keyUri = function (data) {
        var key = data.frag && data.frag.decryptdata;
        return (key && key.uri) || "key";
      };
      hls.on(Hls.Events.KEY_LOADING, function (_, data) {
        var uri = keyUri(data);
        if (!firstFrame && !(uri in keyAsked)) keyAsked[uri] = Date.now();
      });
      hls.on(Hls.Events.KEY_LOADED, function (_, data) {
        var uri = keyUri(data);
        if (firstFrame || !(uri in keyAsked)) return;
        var took = Date.now() - keyAsked[uri];
        delete keyAsked[uri];
        emit("keyloaded", { duration_ms: Math.min(600000, Math.max(0, took)) });
      });
      hls.on(Hls.Events.ERROR, function (_, data) {
        if (/^key/i.test(String(data.details || ""))) delete keyAsked[keyUri(data)];
        var status = data.response && data.response.code ? data.response.code : undefined;
        emit("error", {
          code: String(data.details || data.type).slice(0, 64),
          message: String((data.error && data.error.message) || data.reason || "").slice(0, 500),
          fatal: !!data.fatal, context: context(String(data.details || "")), http_status: status,
        }, !!data.fatal);
      });
    }
    var heartbeat = setInterval(function () {
      if (started && !video.paused && !video.ended) emit("heartbeat");
      flush(false);
    }, HEARTBEAT_MS);
    function end() {
      if (view.over) return;
      endStall();
      emit("viewend", size());
      view.over = true;
      clearInterval(heartbeat);
      flush(true);
    }
    window.addEventListener("pagehide", end);
    return { viewId: view.id, end: end };
  }

  // A view id for hls.js's CMCD session and the monitor; null when the viewer asked not to be
  // tracked (Do Not Track) or `sampleRate` leaves this view out.
  function newViewId(sampleRate) {
    var rate = sampleRate == null ? 1 : sampleRate;
    return tracking() && Math.random() < rate ? randomId() : null;
  }

  window.FerrocastData = { monitor: monitor, newViewId: newViewId };
})();
