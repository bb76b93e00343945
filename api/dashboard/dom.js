// Building DOM nodes and formatting values. Text always goes in as text nodes (never innerHTML),
// so nothing the API returns can inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "value" || name === "checked" || name === "selected") {
      node[name] = value; // properties, so <select>/<input>/<progress> reflect them at once
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return node;
}

/** h("a", {href: "#/"}, "text", child, ...) -> an HTML element. */
export function h(tag, attrs, ...children) {
  return append(setAttributes(document.createElement(tag), attrs), children);
}

/** s("path", {d: "M0 0"}) -> an SVG element. */
export function s(tag, attrs, ...children) {
  return append(setAttributes(document.createElementNS(SVG_NS, tag), attrs), children);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

// ------------------------------------------------------------------ formatting

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Seconds as "45 s", "3 min 20 s", "2 h 05 min". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const t = Math.max(0, Math.round(seconds));
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${String(t % 60).padStart(2, "0")} s`;
  return `${Math.floor(t / 3600)} h ${String(Math.floor((t % 3600) / 60)).padStart(2, "0")} min`;
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

/** "12 s ago", "3 min ago", ... (relative to now). */
export function fmtAgo(iso) {
  if (!iso) return "–";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 5) return "just now";
  if (seconds < 86400) return `${fmtDuration(seconds).replace(/ \d+ s$/, "")} ago`;
  return new Date(iso).toLocaleDateString();
}

/** A metric value with sensible precision (accuracies 0.8125, losses 1.234, FID 41.2). */
export function fmtNumber(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return value.toFixed(abs >= 100 ? 1 : 4).replace(/\.?0+$/, "") || "0";
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

export function progressBar(progress, status) {
  const fraction = Math.min(1, Math.max(0, progress?.fraction ?? 0));
  return h("progress", {
    class: `bar status-${status}`,
    max: 1,
    value: fraction,
    "aria-label": `${Math.round(fraction * 100)}% done`,
  });
}

/** "120 / 500 · 24% · ETA 1 min 20 s" */
export function progressText(job) {
  const p = job.progress;
  const parts = [`${p.step} / ${p.total_steps}`, `${Math.floor(p.fraction * 100)}%`];
  if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(`ETA ${fmtDuration(p.eta_seconds)}`);
  return parts.join(" · ");
}
