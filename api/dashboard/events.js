// The job's event log: one line per event (status changes, progress, evaluations, checkpoints,
// pictures published, log messages), newest at the bottom, following the stream while scrolled to the end.

import { fmtNumber, h } from "./dom.js";

const MAX_ROWS = 400; // older lines leave the page (the API keeps them all: GET .../events?after=)

function metricsText(metrics) {
  return Object.entries(metrics || {}).map(([k, v]) => `${k} ${fmtNumber(v)}`).join(" · ");
}

/** One line of text for an event's data. */
export function summary(event) {
  const d = event.data || {};
  switch (event.type) {
    case "status": {
      const extra = [
        d.attempt ? `attempt ${d.attempt}` : "",
        d.reason ? (d.by ? `${d.reason} by ${d.by}` : d.reason) : "",
        d.error ? `${d.error.code}: ${d.error.message}` : "",
        d.output_model_id ? `model ${d.output_model_id}` : "",
      ].filter(Boolean);
      return `→ ${d.status}${extra.length ? ` (${extra.join(", ")})` : ""}`;
    }
    case "progress": {
      const rate = typeof d.steps_per_second === "number" ? ` · ${d.steps_per_second.toFixed(1)} steps/s` : "";
      const metrics = metricsText(d.metrics);
      return `step ${d.step} / ${d.total_steps}${rate}${metrics ? ` · ${metrics}` : ""}`;
    }
    case "evaluation":
      return `step ${d.step}: ${metricsText(d.metrics)}`;
    case "checkpoint":
      return `checkpoint at step ${d.step}`;
    case "artifact":
      return `step ${d.step}: ${d.name} updated (sha256 ${String(d.sha256 ?? "").slice(0, 12)}…)`;
    case "log":
      return d.step !== undefined ? `step ${d.step}: ${d.message}` : String(d.message ?? "");
    default:
      return JSON.stringify(d);
  }
}

export class EventLog {
  constructor() {
    this.list = h("ol", { class: "events", id: "event-log", "aria-live": "off" });
    this.count = 0;
  }

  add(event) {
    const atEnd = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 24;
    const time = new Date(event.created_at).toLocaleTimeString();
    this.list.append(h("li", { class: `event event-${event.type}`, dataset: { seq: String(event.seq) } },
      h("span", { class: "seq" }, `#${event.seq}`),
      h("time", { datetime: event.created_at }, time),
      h("span", { class: "type" }, event.type),
      h("span", { class: "text" }, summary(event)),
    ));
    this.count += 1;
    while (this.list.childElementCount > MAX_ROWS) this.list.firstElementChild.remove();
    if (atEnd) this.list.scrollTop = this.list.scrollHeight;
  }
}
