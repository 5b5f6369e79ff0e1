// Follow a stream's caption events over SSE (/v1/streams/{id}/events) with resume: the browser's EventSource
// reconnects by itself and sends Last-Event-ID, so the server replays exactly what was missed; when it gives up
// (an HTTP error while the server restarts), we open a new one ourselves from the last id we saw.
const RETRY_MS = [1000, 2000, 4000, 8000]; // our own reopen delays; the last one repeats

/**
 * @param {string} stream
 * @param {{from?: string|null, token?: string|null, onEvent: (event: object, id: string) => void,
 *          onStatus?: (state: "connecting"|"live"|"reconnecting", detail?: string) => void}} options
 *   from: "0" replays the retained history first; null: live from now.
 * @returns {() => void} unsubscribe
 */
export function subscribe(stream, { from = "0", token = null, onEvent, onStatus = () => {} }) {
  let last = from;
  let source = null;
  let failures = 0;
  let timer = null;

  function open() {
    const q = new URLSearchParams();
    if (last !== null) q.set("last_event_id", last);
    if (token) q.set("token", token);
    onStatus("connecting");
    source = new EventSource(`/v1/streams/${encodeURIComponent(stream)}/events?${q}`);
    source.onopen = () => {
      failures = 0;
      onStatus("live");
    };
    source.onmessage = (m) => {
      last = m.lastEventId; // the browser resends it as Last-Event-ID, which the server prefers to ?last_event_id
      onEvent(JSON.parse(m.data), m.lastEventId);
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        const delay = RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)];
        onStatus("reconnecting", `retrying in ${delay / 1000} s`);
        timer = setTimeout(open, delay);
      } else {
        onStatus("reconnecting"); // the browser is already retrying
      }
    };
  }

  open();
  return () => {
    clearTimeout(timer);
    source?.close();
  };
}
