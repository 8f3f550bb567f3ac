// A native player for the server's fragmented MP4 (`/ws/stream?format=fmp4`): the browser's
// own MediaSource (ManagedMediaSource where that is what it has, as on iOS Safari), no
// JavaScript demuxer. The socket's `media` message names the MIME type and codecs; the
// binary frames that follow (init segment, then a fragment per frame) are appended as they
// come. Live: it keeps to the newest frames (1.1x from 0.2 s behind until 0.1 s, a jump
// from 0.5 s) and trims what it has played.
//
//   if (FragmentPlayer.supports(mime)) { player = new FragmentPlayer(video, mime); }
//   player.append(arrayBuffer); ... player.destroy();
"use strict";

const NativeSource = window.ManagedMediaSource || window.MediaSource;

class FragmentPlayer {
  static supports(mime) {
    return Boolean(NativeSource) && NativeSource.isTypeSupported(mime);
  }

  constructor(video, mime) {
    this.video = video;
    this.mime = mime;
    this.queue = [];
    this.buffer = null;
    this.chasing = false;  // playing a little fast to get back to the newest frames
    this.source = new NativeSource();
    if (window.ManagedMediaSource && NativeSource === window.ManagedMediaSource) {
      video.disableRemotePlayback = true;  // ManagedMediaSource plays only without AirPlay
    }
    this.url = URL.createObjectURL(this.source);
    video.src = this.url;
    this.source.addEventListener("sourceopen", () => {
      this.buffer = this.source.addSourceBuffer(mime);
      this.buffer.addEventListener("updateend", () => this.updated());
      this.pump();
    }, {once: true});
  }

  append(data) {
    this.queue.push(new Uint8Array(data));
    this.pump();
  }

  pump() {
    const buffer = this.buffer;
    if (!buffer || buffer.updating || !this.queue.length || this.source.readyState !== "open") {
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
    } catch (error) {  // QuotaExceededError: drop what was played and go on from the next frames
      this.trim(0);
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

  trim(keep) {
    const buffer = this.buffer;
    const ranges = buffer.buffered;
    if (!buffer.updating && ranges.length && this.video.currentTime - keep > ranges.start(0)) {
      buffer.remove(ranges.start(0), this.video.currentTime - keep);
    }
  }

  destroy() {
    this.queue = [];
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
