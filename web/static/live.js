// The live page: microphone or file -> /v1/listen -> captions, plus the share box, copy and WebVTT download.
import { apiKey, mint, setApiKey } from "./access.js";
import { CaptionView } from "./captions.js";
import { Ingest } from "./ingest.js";
import { FRAME, RATE, downmix, toPCM16 } from "./pcm.js";

const UPLOAD_SPEED = 4; // files are sent at 4x real time: fast, yet the captions still build up line by line
const UPLOAD_AHEAD_S = 2; // s of a file's audio allowed in flight before we wait for the socket
const STREAM_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const $ = (id) => document.getElementById(id);

const ui = {
  start: $("start"), stop: $("stop"), language: $("language"), file: $("file"), progress: $("progress"),
  captions: $("captions"), empty: $("empty"), status: document.querySelector("[data-testid=status]"),
  statusText: $("status-text"), lag: $("lag"), notice: $("notice"), overlayUrl: $("overlay-url"),
  watchUrl: $("watch-url"), stream: $("stream"), apiKey: $("api-key"),
};
const view = new CaptionView(ui.captions, { onChange: followScroll });
let ingest = null; // the running Ingest, mic or file
let mic = null; // {context, source, node, tracks} while the microphone is open
let stick = true; // keep the newest caption in view unless the reader scrolled up

// --- stream id and share box ------------------------------------------------------------------------------------

function initialStream() {
  const given = new URLSearchParams(location.search).get("stream");
  if (given && STREAM_ID.test(given)) return given;
  const kept = localStorage.getItem("livecaptions.stream"); // the same overlay URL keeps working across visits
  if (kept && STREAM_ID.test(kept)) return kept;
  const made = `live-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
  localStorage.setItem("livecaptions.stream", made);
  return made;
}

async function updateShare() {
  const stream = ui.stream.value;
  const q = new URLSearchParams({ stream });
  try {
    const token = await mint("read", stream, 86400); // null without an API key: auth is off
    if (token) q.set("token", token);
  } catch (e) {
    notice(`No read token for the overlay: ${e.message}`);
  }
  ui.overlayUrl.value = `${location.origin}/overlay?${q}`;
  ui.watchUrl.href = `${location.origin}/watch?${q}`;
}

ui.stream.value = initialStream();
ui.apiKey.value = apiKey();
updateShare();
ui.stream.addEventListener("change", () => {
  if (!STREAM_ID.test(ui.stream.value)) return notice("A stream ID is letters, digits and . _ : - (up to 128)");
  localStorage.setItem("livecaptions.stream", ui.stream.value);
  updateShare();
});
ui.apiKey.addEventListener("change", () => {
  setApiKey(ui.apiKey.value.trim());
  updateShare();
});
$("copy-overlay").addEventListener("click", () => copy(ui.overlayUrl.value, "Overlay URL copied"));

// --- status ---------------------------------------------------------------------------------------------------------

const STATES = {
  idle: "Ready", connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closing: "Finishing…",
  closed: "Stopped", failed: "Failed",
};

function status(state, detail) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = detail ? `${STATES[state]} (${detail})` : STATES[state];
  if (state !== "live") ui.lag.textContent = "";
}

function notice(text) {
  ui.notice.textContent = text;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { ui.notice.textContent = ""; }, 6000);
}

function onEvent(event, session, offset) {
  if (event.type === "error") notice(event.message);
  if (event.type === "caption.partial" || event.type === "caption.final") {
    // Latency: how much audio we had sent when this caption came, beyond the audio it covers.
    const lag = Math.max(0, ingest.clock - (offset + event.end));
    ui.lag.textContent = `· ${lag.toFixed(1)} s behind`;
    ui.empty.hidden = true;
  }
  view.handle(event, session, offset);
}

function followScroll() {
  if (stick) ui.captions.scrollTop = ui.captions.scrollHeight;
}
ui.captions.addEventListener("scroll", () => {
  const c = ui.captions;
  stick = c.scrollHeight - c.scrollTop - c.clientHeight < 40;
});

function newIngest() {
  return new Ingest({
    stream: ui.stream.value, language: ui.language.value, token: () => mint("listen", ui.stream.value, 600),
    onEvent,
    onStatus(state, detail) {
      status(state, detail);
      if (state === "failed") { // reconnecting cannot help (a refused key, a bad request): hand the controls back
        closeMic();
        running(false);
      }
    },
  });
}

function running(on) {
  ui.start.disabled = on;
  ui.stop.disabled = !on;
  ui.file.disabled = on;
  ui.language.disabled = on; // fixed per session on the server
  ui.stream.disabled = on;
}

// --- microphone -------------------------------------------------------------------------------------------------------

async function start() {
  running(true);
  try {
    // Raw audio: echo cancellation, noise suppression and gain control are tuned for calls and hurt recognition.
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    const context = new AudioContext();
    await context.audioWorklet.addModule("/static/capture-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm16-capture", { numberOfOutputs: 0 });
    ingest = newIngest();
    node.port.onmessage = (m) => ingest?.send(m.data);
    source.connect(node);
    mic = { context, source, node, tracks: stream.getTracks() };
    ingest.start();
    ui.stop.focus(); // keyboard users land on the control they need next
  } catch (e) {
    status("failed", e.name === "NotAllowedError" ? "microphone permission denied" : e.message);
    closeMic();
    running(false);
  }
}

function closeMic() {
  if (!mic) return;
  mic.source.disconnect();
  mic.node.port.onmessage = null;
  mic.tracks.forEach((t) => t.stop());
  mic.context.close();
  mic = null;
}

async function stop() {
  ui.stop.disabled = true;
  closeMic();
  try {
    await ingest?.finish();
  } catch (e) {
    notice(e.message);
  }
  running(false);
  ui.start.focus();
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);

// --- file upload: decoded in the browser, streamed through /v1/listen like the microphone ---------------------------

async function captionFile(file) {
  running(true);
  ui.stop.disabled = true;
  ui.progress.hidden = false;
  ui.progress.value = 0;
  try {
    // An offline context at 16 kHz decodes any format the browser plays and resamples it in one step.
    const decoded = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await file.arrayBuffer());
    const channels = Array.from({ length: decoded.numberOfChannels }, (_, i) => decoded.getChannelData(i));
    const pcm = toPCM16(downmix(channels));
    ingest = newIngest();
    ingest.start();
    const t0 = performance.now();
    for (let i = 0; i < pcm.length; i += FRAME) {
      ingest.send(pcm.slice(i, i + FRAME));
      ui.progress.value = (i + FRAME) / pcm.length;
      const due = t0 + (i / RATE) * (1000 / UPLOAD_SPEED); // pace: UPLOAD_SPEED x real time, never too far ahead
      const wait = Math.max(due - performance.now(), (ingest.backlog - UPLOAD_AHEAD_S) * 1000, 0);
      if (wait > 0 || i % (FRAME * 25) === 0) await sleep(Math.max(wait, 0));
      if (ingest.state === "failed") break;
    }
    await ingest.finish();
  } catch (e) {
    status("failed", e.name === "EncodingError" ? `cannot decode ${file.name}` : e.message);
  } finally {
    ui.progress.hidden = true;
    ui.file.value = "";
    running(false);
  }
}

ui.file.addEventListener("change", () => ui.file.files[0] && captionFile(ui.file.files[0]));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- copy and download ---------------------------------------------------------------------------------------------

async function copy(text, done) {
  try {
    await navigator.clipboard.writeText(text);
  } catch { // not a secure context, or no permission: the old way
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  notice(done);
}

$("copy").addEventListener("click", () => copy(view.text(), `Copied ${view.finals.length} lines`));
$("download").addEventListener("click", () => {
  const url = URL.createObjectURL(new Blob([view.vtt()], { type: "text/vtt" }));
  const a = Object.assign(document.createElement("a"), { href: url, download: `${ui.stream.value}.vtt` });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});
