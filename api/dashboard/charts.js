// Training curves drawn client-side as inline SVG: one small line chart per family of metric
// names (losses, accuracy/F1, FID, KID, then one chart per other metric).

import { fmtNumber, h, s } from "./dom.js";

const WIDTH = 360; // viewBox units; the SVG scales to its container
const HEIGHT = 190;
const PAD = { left: 46, right: 10, top: 10, bottom: 22 };
const MAX_POINTS = 600; // per series: more points than pixels only cost time
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

const FAMILIES = [
  { title: "Losses", test: (name) => name.startsWith("loss") },
  { title: "Accuracy and F1", test: (name) => /accuracy|f1|precision|recall/.test(name) && !name.startsWith("delta") },
  { title: "FID", test: (name) => name === "fid" || name.startsWith("fid_") },
  { title: "KID", test: (name) => name === "kid" || name.startsWith("kid_") },
];

/** {name: [[step, value], ...]} -> [{title, series: {name: points}}], families first, then one per name. */
export function groupMetrics(byName) {
  const groups = [];
  const taken = new Set();
  for (const family of FAMILIES) {
    const names = Object.keys(byName).filter((name) => family.test(name)).sort();
    if (!names.length) continue;
    names.forEach((name) => taken.add(name));
    groups.push({ title: family.title, series: Object.fromEntries(names.map((name) => [name, byName[name]])) });
  }
  for (const name of Object.keys(byName).sort()) {
    if (!taken.has(name)) groups.push({ title: name, series: { [name]: byName[name] } });
  }
  return groups;
}

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart). */
function niceTicks(lo, hi, count = 4) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function decimate(points) {
  if (points.length <= MAX_POINTS) return points;
  const stride = Math.ceil(points.length / MAX_POINTS);
  const kept = points.filter((_, i) => i % stride === 0);
  if (kept[kept.length - 1] !== points[points.length - 1]) kept.push(points[points.length - 1]);
  return kept;
}

function swatch(color) {
  return s("svg", { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" }, s("rect", { width: 10, height: 10, rx: 2, fill: color }));
}

/** A <figure> with one SVG line chart of `series` ({name: [[step, value], ...]}) and a legend. */
export function lineChart(title, series) {
  const entries = Object.entries(series).filter(([, points]) => points.length);
  const all = entries.flatMap(([, points]) => points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = [y0 - (Math.abs(y0) || 1) * 0.05, y1 + (Math.abs(y1) || 1) * 0.05];
  const margin = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - margin, y1 + margin];
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (WIDTH - PAD.left - PAD.right);
  const py = (y) => HEIGHT - PAD.bottom - ((y - y0) / (y1 - y0)) * (HEIGHT - PAD.top - PAD.bottom);

  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": title });
  for (const tick of niceTicks(y0, y1)) {
    const y = py(tick).toFixed(1);
    svg.append(
      s("line", { class: "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y }),
      s("text", { class: "tick", x: PAD.left - 4, y, "text-anchor": "end", "dominant-baseline": "middle" }, fmtNumber(tick)),
    );
  }
  for (const tick of niceTicks(x0, x1, 5)) {
    if (!Number.isInteger(tick)) continue; // steps are whole numbers
    svg.append(s("text", { class: "tick", x: px(tick).toFixed(1), y: HEIGHT - 6, "text-anchor": "middle" }, fmtNumber(tick)));
  }
  svg.append(s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: HEIGHT - PAD.bottom }));
  svg.append(s("line", { class: "axis", x1: PAD.left, x2: WIDTH - PAD.right, y1: HEIGHT - PAD.bottom, y2: HEIGHT - PAD.bottom }));

  const legend = h("ul", { class: "legend" });
  entries.forEach(([name, points], i) => {
    const color = COLORS[i % COLORS.length];
    const d = decimate(points).map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)} ${py(y).toFixed(1)}`).join("");
    svg.append(s("path", { d, stroke: color, class: "series", "data-name": name }, s("title", {}, name)));
    if (points.length === 1) {
      const [x, y] = points[0];
      svg.append(s("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 2.5, fill: color }));
    }
    const last = points[points.length - 1];
    legend.append(
      h("li", {}, swatch(color), name, " ", h("b", {}, fmtNumber(last[1]))),
    );
  });
  return h("figure", { class: "chart-card" }, h("figcaption", {}, title), svg, legend);
}
