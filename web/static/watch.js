// The viewer: /watch?stream=ID[&token=...] shows the whole transcript so far and follows it live, the current
// partial at the bottom. Without ?stream= it lists the live streams to pick from.
import { pageToken } from "./access.js";
import { CaptionView } from "./captions.js";
import { subscribe } from "./subscribe.js";

const q = new URLSearchParams(location.search);
const stream = q.get("stream");
const token = pageToken();
const $ = (id) => document.getElementById(id);
const captions = $("captions");
const LABELS = { idle: "Choose a stream", connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
                 failed: "Failed" };

function status(state, detail) {
  document.querySelector("[data-testid=status]").dataset.state = state;
  $("status-text").textContent = detail ? `${LABELS[state]} (${detail})` : LABELS[state];
}

async function listStreams() {
  $("picker").hidden = false;
  const r = await fetch(token ? `/v1/streams?token=${encodeURIComponent(token)}` : "/v1/streams");
  if (!r.ok) return status("failed", `cannot list streams (HTTP ${r.status})`);
  const ids = Object.keys((await r.json()).streams); // {id: {language, started}}
  const list = $("streams");
  for (const id of ids) {
    const a = Object.assign(document.createElement("a"), { textContent: id });
    a.href = `/watch?${new URLSearchParams(token ? { stream: id, token } : { stream: id })}`;
    const li = document.createElement("li");
    li.append(a);
    list.append(li);
  }
  if (!ids.length) list.append(Object.assign(document.createElement("li"), { textContent: "none right now" }));
  status("idle"); // nothing is live on this page until a stream is chosen
}

if (stream) {
  document.title = `Captions: ${stream}`;
  $("title").textContent = `Captions: ${stream}`;
  captions.hidden = $("follow-label").hidden = false;
  const view = new CaptionView(captions, {
    onChange() {
      if ($("follow").checked) captions.scrollTop = captions.scrollHeight;
    },
  });
  let session = 0;
  subscribe(stream, {
    from: "0", // the transcript from the start (as far as the server retains it)
    token,
    onEvent(event) {
      if (event.type === "session.started") session += 1;
      view.handle(event, session);
    },
    onStatus: status,
  });
} else {
  listStreams();
}
