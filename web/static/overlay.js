// The overlay: /overlay?stream=ID[&token=...] shows the stream's last lines, styled from the query string:
//   lines=2       lines on screen (the live partial counts as one)
//   size=42       font size: px, or any CSS length (3vw, 2.5rem)
//   font=...      CSS font family          color=fff / white    text colour (hex without '#' is fine)
//   bg=000a       box behind each line ("none": no box)
//   position=bottom|middle|top             align=center|left|right
//   maxage=0      seconds after which a final line fades away (0: never)
//   partials=1    show the live partial     shadow=1    outline the text (readable without a box)
//   width=90      max line width in % of the page width
import { pageToken } from "./access.js";
import { CaptionView } from "./captions.js";
import { subscribe } from "./subscribe.js";

const FADE_S = 1; // s a line takes to fade out after maxage
const q = new URLSearchParams(location.search);
const root = document.documentElement.style;
const box = document.getElementById("overlay");

function number(name, fallback, min, max) {
  const v = Number(q.get(name));
  return q.has(name) && Number.isFinite(v) ? Math.min(max, Math.max(min, v)) : fallback;
}

function flag(name, fallback) {
  return q.has(name) ? !["0", "false", "no", "off"].includes(q.get(name).toLowerCase()) : fallback;
}

function colour(name) {
  let v = q.get(name);
  if (v === null) return null;
  if (v === "none") return "transparent";
  if (/^[0-9a-f]{3,8}$/i.test(v)) v = `#${v}`;
  return CSS.supports("color", v) ? v : null;
}

/** Set a custom property from a query parameter, only if it is a valid value for `property` (no CSS injection). */
function style(variable, value, property) {
  if (value !== null && value !== "" && CSS.supports(property, value)) root.setProperty(variable, value);
}

const size = q.get("size");
style("--size", size && /^\d+(\.\d+)?$/.test(size) ? `${size}px` : size, "font-size");
style("--font", q.get("font"), "font-family");
style("--color", colour("color"), "color");
style("--bg", colour("bg"), "background-color");
style("--width", `${number("width", 90, 10, 100)}vw`, "max-width");
style("--justify", { top: "flex-start", middle: "center", bottom: "flex-end" }[q.get("position")] ?? null,
      "justify-content");
const align = q.get("align");
if (["left", "right", "center"].includes(align)) {
  style("--align", align, "text-align");
  box.classList.add(`align-${align}`);
}
root.setProperty("--fade-s", `${FADE_S}s`);
if (flag("shadow", true)) box.classList.add("shadow");

const maxAge = number("maxage", 0, 0, 86400);
const view = new CaptionView(box, {
  maxLines: number("lines", 2, 1, 50), partials: flag("partials", true), finalId: "overlay-line",
  partialId: "overlay-partial",
});

const stream = q.get("stream");
if (stream) {
  let session = 0; // successive sessions of the stream restart their segment numbers
  subscribe(stream, {
    from: "0", // the history first: a freshly added browser source shows the current lines at once
    token: pageToken(),
    onEvent(event) {
      if (event.type === "session.started") session += 1;
      view.handle(event, session);
    },
    onStatus(state) {
      document.body.dataset.state = state; // for tests and debugging; nothing is drawn for it
    },
  });
} else {
  box.textContent = "Add ?stream=ID to the overlay URL";
}

if (maxAge > 0) {
  setInterval(() => {
    const now = performance.now();
    for (const el of box.querySelectorAll(".line.final")) {
      const age = (now - Number(el.dataset.at)) / 1000;
      if (age > maxAge + FADE_S) el.remove();
      else if (age > maxAge) el.classList.add("old");
    }
  }, 250);
}
