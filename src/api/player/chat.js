// The chat beside the player (/play/{playback_id}): joins /chat/{playback_id} over a
// WebSocket, shows the history and each message as it comes, removes hidden ones, and sends
// what the viewer types. Every text is set as text, never as HTML. Reconnects after a drop.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const list = document.getElementById("chat-messages");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-text");
  const status = document.getElementById("chat-status");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/chat/" + encodeURIComponent(root.dataset.playbackId) + (root.dataset.query || "");
  const chat = (window.chat = { name: null, connected: false, received: 0, errors: [] });
  let socket = null;
  let retry = 1000;

  function say(text) { status.textContent = text || ""; }

  function add(m) {
    if (list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    const li = document.createElement("li");
    li.dataset.id = m.id;
    const name = document.createElement("span");
    name.className = "name";
    name.style.color = m.color;
    name.textContent = m.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = m.text;
    li.append(name, " ", text);
    list.append(li);
    while (list.children.length > 200) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
    chat.received += 1;
  }

  function connect() {
    socket = new WebSocket(url);
    socket.addEventListener("open", () => { retry = 1000; chat.connected = true; say(""); });
    socket.addEventListener("message", (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch (err) { return; }
      if (m.type === "welcome") { chat.name = m.name; input.placeholder = "Chat as " + m.name; }
      else if (m.type === "history") { list.replaceChildren(); m.messages.forEach(add); }
      else if (m.type === "message") add(m);
      else if (m.type === "hidden") {
        const li = list.querySelector(`[data-id="${CSS.escape(m.id)}"]`);
        if (li) li.remove();
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
})();
