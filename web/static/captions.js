// CaptionView: renders caption events (gateway/events.py) into a container. Finals are lines; the open segment's
// partial is drawn at the end, its stable prefix solid and the rest faded, and its final replaces it in place.
// Used by the live page, the viewer and the overlay (the overlay keeps only the last `maxLines`).

/**
 * @param {HTMLElement} container
 * @param {{maxLines?: number, partials?: boolean, finalId?: string, partialId?: string, onChange?: Function}} options
 */
export class CaptionView {
  constructor(container, { maxLines = Infinity, partials = true, finalId = "final", partialId = "partial",
                           onChange = () => {} } = {}) {
    Object.assign(this, { container, maxLines, partials, finalId, partialId, onChange });
    this.open = new Map(); // "<session>:<segment>" -> its line element while it is a partial
    this.finals = []; // {text, start, end} in order, times in seconds of the whole recording (see `handle`)
  }

  /**
   * One event. `session` tells apart the segments of successive sessions on one stream (segment numbers restart
   * at 0); `offset` (seconds) places the session's times on the recording's clock, for the WebVTT export.
   */
  handle(event, session = "", offset = 0) {
    const key = `${session}:${event.segment}`;
    switch (event.type) {
      case "caption.partial":
        if (this.partials) this.partial(key, event);
        break;
      case "caption.final":
        this.final(key, event, offset);
        break;
      case "session.started":
      case "session.ended": // an aborted segment never gets its final: do not leave its preview behind
        for (const el of this.open.values()) el.remove();
        this.open.clear();
        break;
      default:
        return;
    }
    this.trim();
    this.onChange(event);
  }

  partial(key, event) {
    let el = this.open.get(key);
    if (!el) {
      el = this.line(this.partialId, "partial");
      el.setAttribute("aria-hidden", "true"); // screen readers hear each line once, when it is final
      el.append(span("stable"), span("unstable"));
      this.container.append(el);
      this.open.set(key, el);
    }
    el.children[0].textContent = event.stable.trim() ? event.stable : "";
    el.children[1].textContent = event.text.slice(event.stable.length);
  }

  final(key, event, offset) {
    const text = event.text.trim();
    let el = this.open.get(key);
    this.open.delete(key);
    if (!text) { // the segment held no words after all
      el?.remove();
      return;
    }
    if (el) {
      el.replaceChildren(); // in place: the line keeps its position and becomes final
      el.removeAttribute("aria-hidden");
    } else {
      el = this.line(this.finalId, "final");
      const firstOpen = this.open.values().next().value; // finals go above any newer segment's preview
      this.container.insertBefore(el, firstOpen ?? null);
    }
    el.dataset.testid = this.finalId;
    el.className = "line final";
    el.textContent = text;
    el.dataset.at = String(performance.now());
    this.finals.push({ text, start: offset + event.start, end: offset + event.end });
  }

  line(testid, kind) {
    const el = document.createElement("p");
    el.className = `line ${kind}`;
    el.dataset.testid = testid;
    return el;
  }

  trim() {
    if (!Number.isFinite(this.maxLines)) return;
    const finals = this.container.querySelectorAll(".line.final"); // the current previews always show
    const room = Math.max(0, this.maxLines - this.open.size);
    for (let i = 0; i < finals.length - room; i++) finals[i].remove();
  }

  clear() {
    this.container.replaceChildren();
    this.open.clear();
    this.finals = [];
  }

  text() {
    return this.finals.map((f) => f.text).join("\n");
  }

  vtt() {
    const cues = this.finals.map((f, i) => `${i + 1}\n${clock(f.start)} --> ${clock(Math.max(f.end, f.start))}\n${f.text}\n`);
    return ["WEBVTT\n", ...cues].join("\n");
  }
}

function span(cls) {
  const s = document.createElement("span");
  s.className = cls;
  return s;
}

/** Seconds -> WebVTT timestamp hh:mm:ss.mmm */
export function clock(seconds) {
  const ms = Math.round(seconds * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}.${pad(ms % 1000, 3)}`;
}
