// One caption stream sent to /v1/listen: PCM16 frames out, caption events back. If the socket drops (network,
// server restart) it reconnects by itself under the same stream id, says so, and sends the audio it held meanwhile,
// so the captions go on from where they stopped.
import { FRAME, RATE } from "./pcm.js";

// A caption line ends at a pause this long: longer than any pause inside a sentence of ../shared/speech (JFK's
// rhetorical ones last up to 1.1 s), where a voice agent's turn (the server's default) ends at 0.7 s.
const LINE_PAUSE_MS = 1500;
const HOLD_S = 30; // s of audio kept while reconnecting; older audio is dropped (a gap on the clock)
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000]; // reconnect delays; the last one repeats
// Close codes after which reconnecting cannot help: the request itself is wrong (see gateway/ingest.py).
const FATAL = new Set([1003, 1007, 1008, 1009, 4400, 4401, 4403]);

export class Ingest {
  /**
   * @param {{stream: string, language: string, token: () => Promise<string|null>,
   *          onEvent: (event: object, session: number, offset: number) => void,
   *          onStatus: (state: string, detail?: string) => void}} options
   *   onEvent gets the session number (1, 2, ... one per connection) and the session's start on the audio clock.
   *   states: connecting, live, reconnecting, closing, closed, failed.
   */
  constructor({ stream, language, token, onEvent, onStatus }) {
    Object.assign(this, { stream, language, token, onEvent, onStatus });
    this.ws = null;
    this.session = 0;
    this.offset = 0; // s: where the current session starts on the audio clock (audio sent in earlier sessions)
    this.sent = 0; // samples sent in the current session
    this.held = []; // frames waiting for a socket
    this.attempt = 0;
    this.finishing = null; // {resolve, reject} once finish() was called
    this.state = "idle";
  }

  /** s of audio handed to the server so far, all sessions: the audio clock that caption times are measured on. */
  get clock() {
    return this.offset + this.sent / RATE;
  }

  /** s of audio waiting to be sent (for pacing uploads). */
  get backlog() {
    return (this.held.length * FRAME) / RATE + (this.ws?.bufferedAmount ?? 0) / (2 * RATE);
  }

  start() {
    this.connect();
  }

  /** One PCM16 frame (Int16Array). */
  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN && this.state === "live") {
      this.ws.send(frame);
      this.sent += frame.length;
      return;
    }
    this.held.push(frame);
    const max = (HOLD_S * RATE) / FRAME;
    if (this.held.length > max) {
      const dropped = this.held.splice(0, this.held.length - max);
      this.offset += dropped.reduce((n, f) => n + f.length, 0) / RATE; // the clock still counts the lost audio
    }
  }

  /** Ask for the last finals: resolves once the server has sent them and closed the session. */
  finish() {
    return new Promise((resolve, reject) => {
      this.finishing = { resolve, reject };
      if (this.state === "live" && this.ws?.readyState === WebSocket.OPEN) {
        this.setState("closing");
        this.ws.send(JSON.stringify({ type: "close" }));
      } else if (this.state !== "connecting") { // reconnecting, failed, closed: nothing more will come
        clearTimeout(this.timer);
        this.ws?.close();
        if (this.state !== "failed") this.setState("closed");
        resolve();
      } // connecting: flushHeld() sends the close once the session has started and has the held audio
    });
  }

  /** Leave now, without waiting for finals. */
  abort() {
    clearTimeout(this.timer);
    this.finishing = this.finishing || { resolve() {}, reject() {} };
    this.ws?.close(1000);
    this.setState("closed");
  }

  async connect() {
    this.setState(this.session ? "reconnecting" : "connecting", this.session ? "connecting again" : undefined);
    let token = null;
    try {
      token = await this.token();
    } catch (e) {
      return this.fail(e.message);
    }
    const q = new URLSearchParams({ stream: this.stream, encoding: "pcm_s16le", sample_rate: String(RATE),
                                    language: this.language, turn_ms: String(LINE_PAUSE_MS) });
    if (token) q.set("token", token);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/listen?${q}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let error = null; // the last error event: the reason a close gives
    ws.onmessage = (m) => {
      const event = JSON.parse(m.data);
      if (event.type === "session.started") {
        this.offset += this.sent / RATE;
        this.sent = 0;
        this.session += 1;
        this.attempt = 0;
        this.setState("live");
        this.flushHeld();
      } else if (event.type === "error") {
        error = event;
      }
      this.onEvent(event, this.session, this.offset);
    };
    ws.onclose = (c) => {
      if (ws !== this.ws) return;
      if (this.finishing && (c.code === 1000 || this.state === "closed")) {
        this.setState("closed");
        return this.finishing.resolve();
      }
      if (FATAL.has(c.code)) return this.fail(error?.message || c.reason || `closed with code ${c.code}`);
      const delay = BACKOFF_MS[Math.min(this.attempt++, BACKOFF_MS.length - 1)];
      const why = error?.message || c.reason || (c.code === 1012 ? "server restarting" : "connection lost");
      this.setState("reconnecting", `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  flushHeld() {
    const held = this.held;
    this.held = [];
    for (const frame of held) this.send(frame);
    if (this.finishing) { // finish() was called while we were away: close now that the held audio is out
      this.setState("closing");
      this.ws.send(JSON.stringify({ type: "close" }));
    }
  }

  fail(message) {
    this.setState("failed", message);
    this.finishing?.reject(new Error(message));
  }

  setState(state, detail) {
    this.state = state;
    this.onStatus(state, detail);
  }
}
