// The viewer page: the stream list (polled from REST), the add / edit form, and one live
// tile per stream. A tile plays fMP4 with the browser's own MSE (mse-player.js) when the
// `media` message's codecs are supported, else MPEG-TS with mpegts.js (protocol-loader.js),
// on the full protocol: its socket stays up while the server retries the camera, so the
// same player plays on;
// if the socket itself closes, the tile opens a new one with backoff (1, 2, 4 … 30 s),
// except after AUTH, NOT_FOUND or LIMIT, which need a person. A page put away (pagehide,
// the back/forward cache) releases every socket; shown again (pageshow), it reconnects.
"use strict";

const FINAL = new Set(["AUTH", "NOT_FOUND", "LIMIT", "UNAUTHORIZED", "FORBIDDEN"]);
const LOW_LATENCY = {enableStashBuffer: false, liveBufferLatencyChasing: true, liveSync: true,
                     liveSyncMaxLatency: 0.2, liveSyncTargetLatency: 0.1, liveSyncPlaybackRate: 1.1,
                     liveBufferLatencyMaxLatency: 0.5, liveBufferLatencyMinRemain: 0.1};
const tiles = new Map();  // stream id -> Tile
window.tiles = tiles;

// When the server needs credentials (a 401), the page shows its sign-in form: a user's
// name and password (POST /api/login/ sets an HttpOnly session cookie, which REST and the
// sockets then carry), or API_TOKEN, kept for this tab in sessionStorage: REST sends it
// as a bearer, sockets as a subprotocol. `GET /api/me/` says who is signed in; a viewer
// sees no add / edit / delete.
const token = () => sessionStorage.getItem("token");
let me = null;  // {username, role, streams} once known

async function api(method, path, body) {
  const init = {method, headers: {}, credentials: "same-origin"};
  if (token()) {
    init.headers.Authorization = `Bearer ${token()}`;
  }
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (response.status === 401) {
    signedOut(token() ? "that token was refused" : "");
  }
  return {ok: response.ok, status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null};
}

const login = document.getElementById("login");
const account = document.getElementById("account");

function signedOut(why) {
  me = null;
  account.hidden = true;
  login.hidden = false;
  document.getElementById("login-error").textContent = why;
  for (const tile of tiles.values()) {
    tile.remove();
  }
  tiles.clear();
  document.getElementById("rows").replaceChildren();
}

// who is signed in, and the controls that role has
async function whoAmI() {
  const answer = await api("GET", "/api/me/");
  if (!answer.ok) {
    return false;
  }
  me = answer.body;
  login.hidden = true;
  account.hidden = !me.username;
  document.getElementById("username").textContent = me.username || "";
  document.getElementById("role").textContent = me.role;
  document.body.dataset.role = me.role;
  document.getElementById("edit").hidden = me.role !== "admin";
  document.getElementById("discover").hidden = me.role !== "admin";
  return true;
}

login.onsubmit = async (event) => {
  event.preventDefault();
  const fields = login.elements;
  if (fields.token.value.trim()) {
    sessionStorage.setItem("token", fields.token.value.trim());
  } else {
    sessionStorage.removeItem("token");
    const answer = await api("POST", "/api/login/", {username: fields.username.value, password: fields.password.value});
    if (!answer.ok) {
      const error = (answer.body && answer.body.error) || {message: `HTTP ${answer.status}`};
      const wait = answer.headers.get("Retry-After");
      login.hidden = false;
      document.getElementById("login-error").textContent = error.message + (wait ? ` (try again in ${wait} s)` : "");
      return;
    }
  }
  login.reset();
  if (!await whoAmI()) {
    return;
  }
  for (const tile of tiles.values()) {
    tile.stopped = false;  // an UNAUTHORIZED stop: try again with the credentials
  }
  await refresh();
  for (const tile of tiles.values()) {
    if (!tile.socket) {
      tile.connect();
    }
  }
};

document.getElementById("logout").onclick = async () => {
  sessionStorage.removeItem("token");
  await api("POST", "/api/logout/");
  signedOut("");
};

// mpegts.js, loaded the first time a tile plays MPEG-TS (once for every tile)
let mpegtsLoading = null;

function loadMpegts() {
  if (window.mpegts) {
    return Promise.resolve();
  }
  mpegtsLoading = mpegtsLoading || new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/vendor/mpegts.js";
    script.onload = resolve;
    script.onerror = () => {
      mpegtsLoading = null;  // the next tile tries again
      reject(new Error("mpegts.js did not load"));
    };
    document.head.append(script);
  });
  return mpegtsLoading;
}

class Tile {
  constructor(stream) {
    this.id = stream.id;
    this.format = preferredFormat(stream);  // as the socket opened in the head
    this.messages = [];  // every status and error this tile got, in order
    this.backoff = 1;
    this.stopped = false;  // by a person (or a final error): no reconnecting
    this.watching = false;  // its socket watches the stream (it heard connecting or playing)
    this.el = document.createElement("article");
    this.el.className = "tile";
    this.el.dataset.id = stream.id;
    this.el.innerHTML = `<h2></h2><video muted autoplay playsinline></video>
      <div class="bar"><span class="phase">idle</span><span class="error"></span><span class="note"></span>
      <button data-action="start">start</button><button data-action="stop">stop</button>
      <button data-action="reconnect">reconnect</button></div>`;
    this.video = this.el.querySelector("video");
    // the latest keyframe until the player shows frames (a query token: <video> sends no headers)
    const query = token() ? `&token=${encodeURIComponent(token())}` : "";
    this.video.poster = `/api/streams/${stream.id}/snapshot.jpg?width=320${query}`;
    this.phase = this.el.querySelector(".phase");
    this.error = this.el.querySelector(".error");
    this.note = this.el.querySelector(".note");  // what the tile's player went through
    for (const button of this.el.querySelectorAll("button")) {
      button.onclick = () => this.act(button.dataset.action);
    }
    this.update(stream);
    document.getElementById("tiles").append(this.el);
  }

  update(stream) {
    this.el.querySelector("h2").textContent = stream.name;
  }

  connect() {
    this.release();
    this.phase.textContent = "connecting";
    const url = streamSocketUrl(this.id, this.format);
    // the socket first: its handshake and the cached GOP arrive while the player sets up
    // (on the page's first load it was opened in the head, before mpegts.js was parsed)
    this.early = earlySockets.get(this.id) || openProtocolSocket(url, token());
    earlySockets.delete(this.id);
    this.el.dataset.player = this.format === "fmp4" ? "mse" : "mpegts.js";
    if (this.format === "fmp4") {
      this.playNative(this.early);
      this.early = null;
      return;
    }
    const early = this.early;
    loadMpegts().then(() => {
      if (this.early === early) {  // not released meanwhile
        this.playMpegts(url);
      }
    });
  }

  playMpegts(url) {
    const loader = protocolLoader((message, socket) => this.onMessage(message, socket), () => this.onClose(),
                                  this.early);
    this.player = mpegts.createPlayer({type: "mpegts", isLive: true, url}, {customLoader: loader, ...LOW_LATENCY});
    this.player.attachMediaElement(this.video);
    this.player.load();
    this.player.play();
  }

  // fMP4 into the browser's own MediaSource; a codecs string it cannot play falls back to
  // mpegts.js on a new MPEG-TS socket
  playNative(socket) {
    this.native = socket;
    socket.take({
      message: (event) => {
        if (typeof event.data !== "string") {
          this.player?.append(event.data);
          return;
        }
        const message = JSON.parse(event.data);
        if (message.type !== "media") {
          this.onMessage(message, socket);
        } else if (!FragmentPlayer.supports(message.mime)) {
          this.format = "mpegts";
          this.connect();
        } else if (!this.player || this.player.mime !== message.mime) {
          this.player?.destroy();
          this.player = new FragmentPlayer(this.video, message.mime, (why) => this.rebuild(socket, why));
        }
      },
      close: () => {
        if (this.native === socket) {
          this.native = null;
          this.onClose();
        }
      },
      error: () => {},
    });
  }

  // The native player hit trouble (a decode error, frames stuck while media arrives): a new
  // player, on the same socket, from a fresh init segment and the latest keyframe (stop and
  // start ask the server for them). Trouble after three rebuilds within a minute: mpegts.js instead.
  rebuild(socket, why) {
    const now = Date.now();
    this.rebuilds = (this.rebuilds || []).filter((at) => now - at < 60000).concat([now]);
    this.el.dataset.rebuilds = String(Number(this.el.dataset.rebuilds || 0) + 1);
    this.note.textContent = `player: ${why}; ${new Date().toLocaleTimeString()}`;
    const mime = this.player.mime;
    this.player.destroy();
    this.player = null;
    if (this.rebuilds.length > 3) {
      this.note.textContent += "; it keeps failing: playing MPEG-TS with mpegts.js instead";
      this.format = "mpegts";
      this.connect();
      return;
    }
    this.note.textContent += "; rebuilt the player";
    this.player = new FragmentPlayer(this.video, mime, (again) => this.rebuild(socket, again), {fresh: true});
    socket.send(JSON.stringify({action: "stop"}));
    socket.send(JSON.stringify({action: "start"}));
  }

  onMessage(message, socket) {
    this.socket = socket;
    this.messages.push(message);
    if (message.type === "status") {
      this.phase.textContent = message.phase;
      this.watching = message.phase === "connecting" || message.phase === "playing";
      if (message.phase === "playing") {
        this.error.textContent = "";
        this.backoff = 1;
      }
    } else if (message.type === "error") {
      this.error.textContent = `${message.code}: ${message.message}`;
      if (FINAL.has(message.code)) {
        this.stopped = true;
      }
      if (message.code === "UNAUTHORIZED") {
        signedOut(token() ? "that token was refused" : "");
      }
    }
  }

  onClose() {
    this.socket = null;
    this.watching = false;
    this.phase.textContent = "disconnected";
    if (this.stopped) {
      return;
    }
    const delay = this.backoff * (0.8 + 0.4 * Math.random());
    this.backoff = Math.min(this.backoff * 2, 30);
    this.timer = setTimeout(() => this.connect(), delay * 1000);
  }

  act(action) {
    if (action === "start" && !this.socket) {
      this.stopped = false;
      this.connect();
      return;
    }
    this.stopped = action === "stop";
    if (action === "reconnect" && !this.watching) {
      action = "start";  // a socket that watches nothing has nothing to restart
    }
    if (this.socket) {
      this.socket.send(JSON.stringify({action}));
    }
  }

  release() {
    clearTimeout(this.timer);
    if (this.native) {
      const native = this.native;
      this.native = null;  // its close is ours, not the server's
      this.socket = null;
      native.close();
    }
    if (this.player) {
      this.player.destroy();  // mpegts.js's loader closes its socket: the server drops the viewer at once
      this.player = null;
      this.socket = null;
    }
    if (this.early && this.early.readyState < WebSocket.CLOSING) {
      this.early.close();  // the loader never took it (its close event is held, unseen)
    }
    this.early = null;
  }

  remove() {
    this.stopped = true;
    this.release();
    this.el.remove();
  }
}

function row(stream) {
  const tr = document.createElement("tr");
  const status = stream.status;
  const video = status.video ? `${status.video.codec} ${status.video.width}x${status.video.height}` : "";
  const error = status.error ? `${status.error.code}: ${status.error.message}` : "";
  for (const text of [stream.name, status.phase, status.viewers, video, error]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  const actions = document.createElement("td");
  if (me && me.role !== "admin") {  // a viewer changes nothing
    tr.append(actions);
    return tr;
  }
  const edit = document.createElement("button");
  edit.textContent = "edit";
  edit.onclick = () => fill(stream);
  const remove = document.createElement("button");
  remove.textContent = "delete";
  remove.onclick = async () => {
    if (!confirm(`Delete ${stream.name}?`)) {
      return;
    }
    await api("DELETE", `/api/streams/${stream.id}/`);
    await refresh();
  };
  actions.append(edit, remove);
  tr.append(actions);
  return tr;
}

async function refresh() {
  if (!me) {
    return;  // not signed in (or not known yet): nothing to list
  }
  const listed = await api("GET", "/api/streams/");
  if (listed.ok) {
    render(listed.body);
  }
}

function render(streams) {
  document.getElementById("rows").replaceChildren(...streams.map(row));
  const seen = new Set();
  for (const stream of streams) {
    seen.add(stream.id);
    const tile = tiles.get(stream.id);
    if (tile) {
      tile.update(stream);
    } else {
      const created = new Tile(stream);
      tiles.set(stream.id, created);
      created.connect();
    }
  }
  for (const [id, tile] of tiles) {
    if (!seen.has(id)) {
      tile.remove();
      tiles.delete(id);
    }
  }
}

const form = document.getElementById("edit");
let editing = null;  // the stream being edited (its url comes back masked: sent only if changed)

function fill(stream) {
  editing = stream;
  form.elements.id.value = stream.id;
  form.elements.name.value = stream.name;
  form.elements.url.value = stream.url;
  form.elements.transport.value = stream.transport;
  document.getElementById("save").textContent = "save";
  document.getElementById("cancel").hidden = false;
}

function clearForm() {
  editing = null;
  form.reset();
  document.getElementById("save").textContent = "add";
  document.getElementById("cancel").hidden = true;
}

document.getElementById("cancel").onclick = clearForm;

form.onsubmit = async (event) => {
  event.preventDefault();
  for (const span of form.querySelectorAll(".field-error")) {
    span.textContent = "";
  }
  document.getElementById("form-error").textContent = "";
  const body = {name: form.elements.name.value, url: form.elements.url.value,
                transport: form.elements.transport.value};
  if (editing && body.url === editing.url) {
    delete body.url;  // masked: sending it back would replace the stored password
  }
  const saved = editing ? await api("PATCH", `/api/streams/${editing.id}/`, body)
                        : await api("POST", "/api/streams/", body);
  if (!saved.ok) {
    const error = (saved.body && saved.body.error) || {message: `HTTP ${saved.status}`};
    const fields = error.fields || {};
    for (const [name, message] of Object.entries(fields)) {
      const span = form.querySelector(`.field-error[data-for="${name}"]`);
      if (span) {
        span.textContent = message;
      }
    }
    if (!Object.keys(fields).length) {
      document.getElementById("form-error").textContent = error.message;
    }
    return;
  }
  clearForm();
  await refresh();
};

// "Add from network": the ONVIF cameras the server finds on its LAN (GET /api/discover/);
// "use" fills the add form, with the ONVIF credentials typed here in the URL (the server
// answers every URL masked and without them)
const discoverForm = document.getElementById("discover-form");

discoverForm.onsubmit = async (event) => {
  event.preventDefault();
  const user = discoverForm.elements.user.value;
  const password = discoverForm.elements.password.value;
  const query = new URLSearchParams({timeout: "3"});
  if (user) {
    query.set("user", user);
    query.set("password", password);
  }
  const list = document.getElementById("found");
  document.getElementById("discover-error").textContent = "searching…";
  const answer = await api("GET", `/api/discover/?${query}`);
  document.getElementById("discover-error").textContent = answer.ok ? (answer.body.length ? "" : "no camera answered")
    : ((answer.body && answer.body.error && answer.body.error.message) || `HTTP ${answer.status}`);
  list.replaceChildren();
  for (const device of answer.ok ? answer.body : []) {
    if (device.error) {
      const li = document.createElement("li");
      li.textContent = `${device.name} (${device.address}): ${device.error}`;
      list.append(li);
    }
    for (const profile of device.profiles) {
      const li = document.createElement("li");
      const size = profile.width ? ` ${profile.width}x${profile.height}` : "";
      li.textContent = `${device.name} ${profile.name}${size} ${profile.url || profile.error} `;
      if (profile.url) {
        const use = document.createElement("button");
        use.type = "button";
        use.textContent = "use";
        use.onclick = () => {
          clearForm();
          const url = new URL(profile.url);
          if (user) {
            url.username = encodeURIComponent(user);
            url.password = encodeURIComponent(password);
          }
          form.elements.name.value = `${device.name} ${profile.name}`.slice(0, 200);
          form.elements.url.value = url.href;
        };
        li.append(use);
      }
      list.append(li);
    }
  }
};

window.addEventListener("pagehide", () => {
  for (const tile of tiles.values()) {
    tile.release();
  }
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) {  // back from the back/forward cache
    for (const tile of tiles.values()) {
      if (!tile.stopped) {
        tile.connect();
      }
    }
  }
});

// the page comes with the stream list in it (null if the server could not read it)
const embedded = JSON.parse(document.getElementById("stream-list").textContent);
if (embedded) {
  render(embedded);
}
whoAmI().then((known) => known && !embedded && refresh());
setInterval(refresh, 2000);
