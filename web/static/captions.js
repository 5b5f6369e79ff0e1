// CaptionView: renders caption events (gateway/events.py) into a container, a line per turn of the speaker. The
// open turn's line shows its finals so far solid and the open segment's partial after them (its stable prefix
// solid, the rest faded); turn.ended makes it a final line. Used by the live page, the viewer and the overlay (the
// overlay keeps only the last `maxLines`).

/**
 * @param {HTMLElement} container
 * @param {{maxLines?: number, partials?: boolean, finalId?: string, partialId?: string, onChange?: Function}} options
 */
export class CaptionView {
  constructor(container, { maxLines = Infinity, partials = true, finalId = "final", partialId = "partial",
                           onChange = () => {} } = {}) {
    Object.assign(this, { container, maxLines, partials, finalId, partialId, onChange });
    this.turn = null; // the open turn: {el, said} from its first words to its turn.ended
    this.finals = []; // {text, start, end} in order, times in seconds of the whole recording (see `handle`)
  }

  /** One event; `offset` (seconds) places the session's times on the recording's clock, for the WebVTT export. */
  handle(event, session = "", offset = 0) {
    switch (event.type) {
      case "caption.partial":
        if (this.partials) this.partial(event);
        break;
      case "caption.final":
        this.final(event, offset);
        break;
      case "turn.ended":
        this.close(event.text);
        break;
      case "session.started":
      case "session.ended": // an aborted turn never ends: keep what was said, drop its preview
        this.close();
        break;
      default:
        return;
    }
    this.trim();
    this.onChange(event);
  }

  open() {
    if (!this.turn) {
      const el = document.createElement("p");
      el.className = "line partial";
      el.dataset.testid = this.partialId;
      const preview = [span("stable"), span("unstable")];
      for (const s of preview) s.setAttribute("aria-hidden", "true"); // screen readers hear the words once final
      el.append(span("said"), ...preview);
      this.container.append(el);
      this.turn = { el, said: "" };
    }
    return this.turn;
  }

  partial(event) {
    const [, stable, unstable] = this.open().el.children;
    const lead = this.turn.said && event.text ? gap(this.turn.said) : "";
    stable.textContent = event.stable.trim() ? lead + event.stable : "";
    unstable.textContent = (event.stable.trim() ? "" : lead) + event.text.slice(event.stable.length);
  }

  final(event, offset) {
    const text = event.text.trim();
    if (!text) { // the segment held no words after all
      if (this.turn && !this.turn.said) this.close();
      else if (this.turn) for (const s of [...this.turn.el.children].slice(1)) s.textContent = "";
      return;
    }
    const turn = this.open();
    turn.said += (turn.said ? gap(turn.said) : "") + text;
    const [said, stable, unstable] = turn.el.children;
    said.textContent = turn.said;
    stable.textContent = unstable.textContent = "";
    this.finals.push({ text, start: offset + event.start, end: offset + event.end });
  }

  /** The open turn's line becomes final (`text`: the turn's text as the server joined it), or goes if it is empty. */
  close(text) {
    const turn = this.turn;
    this.turn = null;
    if (!turn) return;
    text = (text ?? turn.said).trim();
    if (!text) return turn.el.remove();
    turn.el.className = "line final";
    turn.el.dataset.testid = this.finalId;
    turn.el.textContent = text;
    turn.el.dataset.at = String(performance.now());
  }

  trim() {
    if (!Number.isFinite(this.maxLines)) return;
    const finals = this.container.querySelectorAll(".line.final"); // the current previews always show
    const room = Math.max(0, this.maxLines - (this.turn ? 1 : 0));
    for (let i = 0; i < finals.length - room; i++) finals[i].remove();
  }

  clear() {
    this.container.replaceChildren();
    this.turn = null;
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

/** What goes between two pieces of a turn: nothing after a CJK character, else a space. */
function gap(before) {
  return /[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]$/.test(before) ? "" : " ";
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
