// Small DOM helpers. Everything from the server goes in as text (textContent),
// never as HTML: report fields are typed by Discord users.

/** Creates an element: h("a", {href: "#"}, "text", child, …). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

/** A bar chart of `values` (one bar each), labelled for screen readers. */
export function barChart(values, label) {
  const width = 600;
  const height = 100;
  const max = Math.max(1, ...values);
  const bar = width / Math.max(1, values.length);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label,
    preserveAspectRatio: "none" });
  svg.append(s("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }));
  values.forEach((v, i) => {
    if (v <= 0) return;
    const barHeight = Math.max(2, (v / max) * (height - 4));
    const rect = s("rect", { x: i * bar + 1, y: height - barHeight, width: Math.max(1, bar - 2), height: barHeight });
    const title = s("title", {});
    title.textContent = `${v} synced ${values.length - 1 - i} minute(s) ago`;
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

/** "3 min ago", "in 20 s": how far `iso` is from now. */
export function relative(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const size = Math.abs(seconds);
  const text = size < 90 ? `${size} s` : size < 5400 ? `${Math.round(size / 60)} min`
    : size < 172800 ? `${Math.round(size / 3600)} h` : `${Math.round(size / 86400)} days`;
  return seconds <= 0 ? `${text} ago` : `in ${text}`;
}

/** A time as its local text, with the relative one beside it. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: iso }, `${new Date(iso).toLocaleString()} (${relative(iso)})`);
}

/** Seconds in words: 0.4 s, 12 s, 3.5 min. */
export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 10) return `${value.toFixed(1)} s`;
  if (value < 120) return `${Math.round(value)} s`;
  if (value < 7200) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

/** A sync state as a labelled badge. */
export function state(name) {
  const words = { pending: "pending", syncing: "syncing", synced: "synced", max_retries_exceeded: "failed",
    active: "active", retired: "earlier", rejected: "rejected",
    running: "canary running", promoted: "promoted", rolled_back: "rolled back", ended: "ended" };
  return h("span", { class: `state ${name}`, dataset: { state: name } }, words[name] || name);
}

/** A table with a header row; `rows` are arrays of cells. */
export function table(caption, headers, rows, attrs = {}) {
  return h("div", { class: "table-wrap" },
    h("table", attrs,
      h("caption", { class: "muted" }, caption),
      h("thead", {}, h("tr", {}, headers.map((th) => h("th", { scope: "col", class: th.num ? "num" : null },
        th.text ?? th)))),
      h("tbody", {}, rows)));
}

/** A definition list of [term, value] pairs. */
export function pairs(entries) {
  return h("dl", { class: "pairs" }, entries.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}
