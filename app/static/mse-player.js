// A native player for the server's fragmented MP4 (`/ws/stream?format=fmp4`): the browser's
// own MediaSource (ManagedMediaSource where that is what it has, as on iOS Safari), no
// JavaScript demuxer. The socket's `media` message names the MIME type and codecs; the
// binary frames that follow (init segment, then a fragment per frame) are appended as they
// come. Live: it keeps to the newest frames (1.1x from 0.2 s behind until 0.1 s, a jump
// from 0.5 s) and trims what it has played.
//
// It watches its media element: an error (a decode error, an append the browser refused),
// or no new frame for STALL_MS while fragments still arrive, is trouble: it stops taking
// data and calls `onTrouble(why)` once. The caller then builds a new player (a new
// MediaSource) with `fresh` set, which drops what comes until the next init segment, and
// asks the server for one on the same socket (stop, then start: the init segment and the
// frames from the latest keyframe on).
//
//   if (FragmentPlayer.supports(mime)) { player = new FragmentPlayer(video, mime, onTrouble); }
//   player.append(arrayBuffer); ... player.destroy();
"use strict";

const NativeSource = window.ManagedMediaSource || window.MediaSource;
const STALL_MS = 4000;  // no new frame for this long while fragments arrive: the decoder is stuck

class FragmentPlayer {
  static supports(mime) {
    return Boolean(NativeSource) && NativeSource.isTypeSupported(mime);
  }

  constructor(video, mime, onTrouble = () => {}, {fresh = false} = {}) {
    this.video = video;
    this.mime = mime;
    this.onTrouble = onTrouble;
    this.fresh = fresh;  // drop what comes until an init segment (ftyp) starts a message
    this.queue = [];
    this.buffer = null;
    this.chasing = false;  // playing a little fast to get back to the newest frames
    this.failed = false;
    this.received = 0;  // bytes appended or queued, for the stall watch
    this.progress = {frames: -1, received: 0, at: performance.now()};
    this.source = new NativeSource();
    if (window.ManagedMediaSource && NativeSource === window.ManagedMediaSource) {
      video.disableRemotePlayback = true;  // ManagedMediaSource plays only without AirPlay
    }
    this.url = URL.createObjectURL(this.source);
    video.src = this.url;
    this.onError = () => this.trouble(this.mediaError() || "media error");
    video.addEventListener("error", this.onError);
    this.watch = setInterval(() => this.check(), 1000);
    this.source.addEventListener("sourceopen", () => {
      this.buffer = this.source.addSourceBuffer(mime);
      this.buffer.addEventListener("updateend", () => this.updated());
      // a fragment the browser refused: MSE ends the stream with a decode error, and the
      // media element's `error` event (onError) says so, soon but not in the same task
      // (Chromium sets it from its media pipeline); without it within a second, this says it
      this.buffer.addEventListener("error", () => {
        this.refused = setTimeout(() => this.trouble(this.mediaError() || "the browser refused a fragment"), 1000);
      });
      this.pump();
    }, {once: true});
  }

  append(data) {
    if (this.failed) {
      return;
    }
    const bytes = new Uint8Array(data);
    if (this.fresh) {  // "ftyp" at bytes 4-7: the init segment the server sends after a start
      if (bytes[4] !== 0x66 || bytes[5] !== 0x74 || bytes[6] !== 0x79 || bytes[7] !== 0x70) {
        return;
      }
      this.fresh = false;
    }
    this.received += bytes.byteLength;
    this.queue.push(bytes);
    this.pump();
  }

  pump() {
    const buffer = this.buffer;
    if (!buffer || buffer.updating || !this.queue.length || this.source.readyState !== "open" || this.failed) {
      return;
    }
    const parts = this.queue.splice(0);
    let data = parts[0];
    if (parts.length > 1) {  // what came while the last append ran: one append
      data = new Uint8Array(parts.reduce((size, part) => size + part.byteLength, 0));
      let at = 0;
      for (const part of parts) {
        data.set(part, at);
        at += part.byteLength;
      }
    }
    try {
      buffer.appendBuffer(data);
    } catch (error) {
      if (error.name === "QuotaExceededError") {  // drop what was played and go on from the next frames
        this.trim(0);
      } else {
        this.trouble(`append failed (${error.name})`);
      }
    }
  }

  updated() {
    const video = this.video;
    const ranges = this.buffer.buffered;
    if (ranges.length) {
      const end = ranges.end(ranges.length - 1);
      const behind = end - video.currentTime;
      if (video.currentTime < ranges.start(0) || behind > 0.5) {
        video.currentTime = Math.max(ranges.start(ranges.length - 1), end - 0.05);  // to the live edge
      }
      this.chasing = behind > 0.2 || (this.chasing && behind > 0.1);  // as mpegts.js's liveSync
      video.playbackRate = this.chasing ? 1.1 : 1;
      if (video.currentTime - ranges.start(0) > 30) {
        this.trim(10);
      }
    }
    if (video.paused) {
      video.play().catch(() => {});
    }
    this.pump();
  }

  // No new frame for STALL_MS while fragments keep coming, in a page that is shown and a
  // video that is not paused: the decoder is stuck (seen in Firefox after a camera restart).
  check() {
    const now = performance.now();
    const quality = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    const frames = quality ? quality.totalVideoFrames : this.video.currentTime;
    if (frames !== this.progress.frames || document.visibilityState !== "visible" || this.video.paused) {
      this.progress = {frames, received: this.received, at: now};  // a new frame, or none to expect
      return;
    }
    if (this.received > this.progress.received && now - this.progress.at >= STALL_MS) {
      this.trouble(`no new frame for ${Math.round((now - this.progress.at) / 1000)} s while media arrived`);
    }
  }

  mediaError() {
    const error = this.video.error;
    return error ? `media error ${error.code}${error.message ? ` (${error.message})` : ""}` : "";
  }

  trouble(why) {
    if (this.failed) {
      return;
    }
    this.failed = true;
    this.queue = [];
    this.onTrouble(why);
  }

  trim(keep) {
    const buffer = this.buffer;
    const ranges = buffer.buffered;
    if (!buffer.updating && ranges.length && this.video.currentTime - keep > ranges.start(0)) {
      buffer.remove(ranges.start(0), this.video.currentTime - keep);
    }
  }

  destroy() {
    this.failed = true;
    this.queue = [];
    clearInterval(this.watch);
    clearTimeout(this.refused);
    this.video.removeEventListener("error", this.onError);
    try {
      if (this.source.readyState === "open") {
        this.source.endOfStream();
      }
    } catch (error) {
      // updating: it is going away anyway
    }
    this.video.removeAttribute("src");
    this.video.load();
    URL.revokeObjectURL(this.url);
  }
}
