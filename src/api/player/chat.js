// The chat beside the player (/play/{playback_id}). Live: joins /chat/{playback_id} over a
// WebSocket, shows the history and each message as it comes, removes hidden ones, shows
// badges, slow mode and moderation, sends what the viewer types, and gives moderators hide,
// timeout and ban on each message. Replay (a recording): fetches the broadcast's chat and
// shows each message when the video reaches the moment it was sent (the playlist's
// EXT-X-PROGRAM-DATE-TIME). Every text is set as text, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const list = document.getElementById("chat-messages");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-text");
  const status = document.getElementById("chat-status");
  const query = root.dataset.query || "";
  const chat = (window.chat = {
    name: null, connected: false, received: 0, errors: [], moderator: false, rules: null, notices: [],
    replay: root.dataset.mode === "replay", replayShown: [],
  });

  function say(text) { status.textContent = text || ""; }

  function line(m) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    for (const badge of m.badges || []) {
      const b = document.createElement("span");
      b.className = "fc-badge fc-badge-" + (badge === "moderator" ? "moderator" : "supporter");
      b.textContent = badge === "moderator" ? "MOD" : "SUPPORTER";
      li.append(b, " ");
    }
    const name = document.createElement("span");
    name.className = "name";
    name.style.color = m.color;
    name.textContent = m.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = m.text;
    li.append(name, " ", text);
    return li;
  }

  function scroll() {
    while (list.children.length > 200) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function notice(text) {
    const li = document.createElement("li");
    li.className = "fc-chat-notice";
    li.textContent = text;
    list.append(li);
    chat.notices.push(text);
    scroll();
  }

  if (chat.replay) { replay(); return; }

  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/chat/" + encodeURIComponent(root.dataset.playbackId) + query;
  let socket = null;
  let retry = 1000;

  function act(type, id, extra) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type, id, ...extra }));
  }

  function add(m) {
    if (list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    const li = line(m);
    if (chat.moderator && !(m.badges || []).includes("moderator")) {
      const tools = document.createElement("span");
      tools.className = "fc-mod";
      for (const [label, type, extra] of [["Hide", "hide", {}], ["Timeout", "timeout", { duration_s: 600 }], ["Ban", "ban", {}]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.dataset.action = type;
        b.addEventListener("click", () => act(type, m.id, extra));
        tools.append(b);
      }
      li.append(tools);
    }
    list.append(li);
    scroll();
    chat.received += 1;
  }

  function showRules(r) {
    chat.rules = r;
    const parts = [];
    if (r.slow_mode_s > 0) parts.push(`Slow mode: one message every ${r.slow_mode_s} s`);
    if (r.entitled_only) parts.push("Supporters only");
    document.getElementById("chat-rules").textContent = parts.join(" · ");
  }

  function connect() {
    socket = new WebSocket(url);
    socket.addEventListener("open", () => { retry = 1000; chat.connected = true; say(""); });
    socket.addEventListener("message", (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === "welcome") {
        chat.name = m.name;
        chat.moderator = Boolean(m.moderator);
        input.placeholder = "Chat as " + m.name;
        if (m.rules) showRules(m.rules);
      } else if (m.type === "history") { list.replaceChildren(); m.messages.forEach(add); }
      else if (m.type === "message") add(m);
      else if (m.type === "hidden") {
        const li = list.querySelector(`[data-id="${CSS.escape(m.id)}"]`);
        if (li) li.remove();
      } else if (m.type === "rules") showRules(m);
      else if (m.type === "moderation") {
        notice(m.action === "ban" ? `${m.name} was banned` : `${m.name} was timed out`);
      } else if (m.type === "error") { chat.errors.push(m.code); say(m.message); }
    });
    socket.addEventListener("close", () => {
      chat.connected = false;
      say("reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "send", text }));
    input.value = "";
  });
  connect();

  // --- Replay: the broadcast's messages, each shown when the video reaches its time.
  async function replay() {
    const messages = [];
    let after = null;
    for (let page = 0; page < 20; page++) {
      const sep = query ? "&" : "?";
      const r = await fetch(`/chat/${encodeURIComponent(root.dataset.playbackId)}/replay${query}${after ? sep + "after=" + encodeURIComponent(after) : ""}`,
        { signal: AbortSignal.timeout(10000) }).catch(() => null);
      if (!r || !r.ok) break;
      const body = await r.json();
      messages.push(...body.messages);
      if (!body.next_after) break;
      after = body.next_after;
    }
    messages.sort((a, b) => a.at_ms - b.at_ms);
    chat.replayMessages = messages.length;
    const video = document.getElementById("video");
    let shown = 0;
    // The wall clock of the frame on screen: hls.js from the program date-times, Safari from
    // the stream's start date.
    const now = () => {
      if (window.hls && window.hls.playingDate) return window.hls.playingDate.getTime();
      const start = video.getStartDate ? video.getStartDate().getTime() : NaN;
      return isNaN(start) ? null : start + video.currentTime * 1000;
    };
    function step() {
      const t = now();
      if (t === null) return;
      if (shown > 0 && messages[shown - 1].at_ms > t) {
        // Seeked back: show again only what was sent by then.
        list.replaceChildren();
        shown = 0;
      }
      while (shown < messages.length && messages[shown].at_ms <= t) {
        const m = messages[shown++];
        list.append(line(m));
        chat.replayShown.push({ id: m.id, text: m.text, at: m.at_ms, shownAt: t, videoTime: video.currentTime });
      }
      scroll();
    }
    ["timeupdate", "seeked"].forEach((e) => video.addEventListener(e, step));
    say(messages.length ? "" : "No chat in this broadcast");
  }
})();
