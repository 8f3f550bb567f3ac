// A loader for mpegts.js that speaks the full `/ws/stream` protocol (SPEC §4): it sends
// {"action":"start"} when the socket opens, hands binary frames (MPEG-TS) to the player,
// and JSON frames (status, error) to `onMessage` instead of failing on them as mpegts.js's
// own WebSocket loader does. The socket, and so the player, stays up across the camera's
// restarts and outages: the server retries, sends `connecting` and `playing`, and keeps
// the timestamps on one timeline, so the player plays on.
//
//   const player = mpegts.createPlayer(
//       {type: "mpegts", isLive: true, url: `ws://${location.host}/ws/stream?id=1`},
//       {customLoader: protocolLoader((message, socket) => show(message))});
//
// `socket.send(JSON.stringify({action: "stop" | "start" | "reconnect"}))` drives it.
// To save the player's set-up time before the first frame, open the socket first and
// hand it over: `protocolLoader(onMessage, onClose, openProtocolSocket(url))`.
"use strict";

// The URL of the full protocol's socket for stream `id`, on this page's server; `format`
// "fmp4" for the browser's own MSE (mse-player.js), else MPEG-TS for mpegts.js.
function streamSocketUrl(id, format = "mpegts") {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/stream?id=${id}${format === "fmp4" ? "&format=fmp4" : ""}`;
}

// fMP4 where the browser has MediaSource (or ManagedMediaSource), unless the page was
// opened with ?player=mpegts; mpeg1 streams are for JSMpeg (static/jsmpeg.html).
function preferredFormat(stream) {
  const forced = new URLSearchParams(location.search).get("player") === "mpegts";
  const native = Boolean(window.ManagedMediaSource || window.MediaSource);
  return forced || !native || stream.video === "mpeg1" ? "mpegts" : "fmp4";
}

// A socket of the full protocol, opened now: it sends start as soon as it opens and
// holds what arrives until a loader takes it with `socket.take(handlers)`. With a token
// (API_TOKEN, or a play token), it is offered as the subprotocol `bearer.<token>`.
function openProtocolSocket(url, token = null) {
  const socket = token ? new WebSocket(url, ["rtsp-viewer", `bearer.${token}`]) : new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const held = [];
  const hold = (event) => held.push(event);
  socket.onopen = () => socket.send(JSON.stringify({action: "start"}));
  socket.onmessage = socket.onclose = socket.onerror = hold;
  socket.take = (handlers) => {  // {message, close, error}: called now for what was held
    socket.onmessage = handlers.message;
    socket.onclose = handlers.close;
    socket.onerror = handlers.error;
    for (const event of held.splice(0)) {
      handlers[event.type](event);
    }
  };
  return socket;
}

function protocolLoader(onMessage, onClose = () => {}, early = null) {
  return class ProtocolLoader extends mpegts.BaseLoader {
    static isSupported() {
      return typeof WebSocket !== "undefined";
    }

    constructor() {
      super("rtsp-viewer-protocol-loader");
      this.TAG = "ProtocolLoader";
      this._needStash = false;  // live: every byte goes to the demuxer at once
      this._socket = null;
      this._received = 0;
      this._aborting = false;
    }

    destroy() {
      if (this._socket) {
        this.abort();
      }
      super.destroy();
    }

    open(dataSource) {
      const socket = this._socket = early || openProtocolSocket(dataSource.url);
      early = null;  // a socket serves one open
      this._status = mpegts.LoaderStatus.kBuffering;
      socket.take({
        message: (event) => {
          if (typeof event.data === "string") {
            onMessage(JSON.parse(event.data), socket);
            return;
          }
          const start = this._received;
          this._received += event.data.byteLength;
          if (this._onDataArrival) {
            this._onDataArrival(event.data, start, this._received);
          }
        },
        close: (event) => {
          if (this._aborting) {  // the player asked for it
            this._aborting = false;
            return;
          }
          this._status = mpegts.LoaderStatus.kComplete;
          onClose(event);
          if (this._onComplete) {
            this._onComplete(0, this._received - 1);
          }
        },
        error: () => {
          this._status = mpegts.LoaderStatus.kError;
          if (this._onError) {
            this._onError(mpegts.LoaderErrors.EXCEPTION, {code: -1, msg: "WebSocket error"});
          }
        },
      });
    }

    abort() {
      const socket = this._socket;
      if (socket && (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN)) {
        this._aborting = true;
        socket.close();
      }
      this._socket = null;
      this._status = mpegts.LoaderStatus.kComplete;
    }
  };
}
