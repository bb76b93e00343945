// One job (`#/jobs/<id>`): status and progress, error, results, curves, sample grid, the live
// event log and the artifacts. The job and its metrics are polled every 2 s while it is active
// (and at once when the event stream reports a status change); events arrive over SSE. The
// artifact list is read again on each status change and on each `artifact` event (the pictures
// a running job publishes at its evaluations).

import { ApiError, getJSON, jobPath, postJSON } from "./api.js";
import { ArtifactPanel } from "./artifacts.js";
import { groupMetrics, lineChart } from "./charts.js";
import { fmtNumber, h, progressBar, progressText, statusBadge } from "./dom.js";
import { EventLog } from "./events.js";
import { detailBody, hyperparameterBody, resultBody } from "./results.js";
import { followEvents } from "./sse.js";

const POLL_MS = 2000;
const METRICS_PAGE = 1000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const CANCELLABLE = new Set(["queued", "running", "pausing", "paused"]);
const PAUSABLE = new Set(["queued", "running"]);

const card = (title, ...body) => h("section", { class: "card" }, h("h2", {}, title), ...body);

/**
 * The metric history, read incrementally. The API's cursor only comes with full pages, so the
 * last (partial) page is read again on each refresh until it fills up: at most METRICS_PAGE points.
 */
class MetricHistory {
  constructor(jobId) {
    this.jobId = jobId;
    this.stable = []; // points of full pages
    this.cursor = null; // where the partial page starts
    this.points = [];
  }

  async refresh(signal) {
    for (;;) {
      const params = new URLSearchParams({ limit: String(METRICS_PAGE) });
      if (this.cursor) params.set("after", this.cursor);
      const page = await getJSON(jobPath(this.jobId, `/metrics?${params}`), { signal });
      if (page.next_cursor) {
        this.stable.push(...page.data);
        this.cursor = page.next_cursor;
        continue;
      }
      const changed = this.points.length !== this.stable.length + page.data.length;
      this.points = [...this.stable, ...page.data];
      return changed;
    }
  }

  byName() {
    const out = {};
    for (const p of this.points) (out[p.name] ||= []).push([p.step, p.value]);
    return out;
  }

  latest() {
    const out = {};
    for (const p of this.points) out[p.name] = [p.step, p.value];
    return out;
  }
}

export function renderJob(root, signal, jobId) {
  let job = null;
  let streamEnded = false; // the stream delivered a terminal status
  let wake = () => {};
  const sig = { result: null, updated: null, artifacts: null, status: null };

  const badges = h("span", { class: "badges" });
  const cancel = h("button", { type: "button", class: "danger", hidden: true }, "Cancel job");
  const pause = h("button", { type: "button", hidden: true }, "Pause");
  const resume = h("button", { type: "button", hidden: true }, "Resume");
  const progress = h("div", { class: "progress-block" });
  const errorBox = h("div", { class: "error-box", role: "alert", hidden: true });
  const results = h("div", { id: "results" });
  const hyper = h("div");
  const details = h("div");
  const charts = h("div", { class: "charts", id: "charts" }, h("p", { class: "muted" }, "No metrics yet."));
  const note = h("p", { class: "notice", hidden: true });
  const streamState = h("span", { class: "live" }, "connecting…");
  const artifacts = new ArtifactPanel(jobId, signal);
  const events = new EventLog();
  const metrics = new MetricHistory(jobId);

  root.append(
    h("div", { class: "job-head" },
      h("a", { href: "#/", class: "back" }, "← Jobs"),
      h("h1", { class: "mono" }, jobId),
      badges,
      pause,
      resume,
      cancel,
    ),
    note,
    h("section", { class: "card" }, progress),
    errorBox,
    h("div", { class: "grid" }, card("Results", results), card("Samples", artifacts.pictures)),
    card("Training curves", artifacts.curves),
    card("Metrics over time", charts),
    h("section", { class: "card" }, h("div", { class: "toolbar" }, h("h2", {}, "Events"), streamState), events.list),
    h("div", { class: "grid" }, card("Hyperparameters", hyper), card("Details", details)),
    card("Artifacts", artifacts.table),
  );

  cancel.addEventListener("click", async () => {
    if (!confirm(`Cancel job ${jobId}?`)) return;
    cancel.disabled = true;
    try {
      draw(await postJSON(jobPath(jobId, "/cancel"), undefined, { signal }));
    } catch (error) {
      showNote(`Cancel failed: ${error.message}`);
    } finally {
      cancel.disabled = false;
    }
  });

  // Pause checkpoints the job and frees its worker; resume queues it again from that checkpoint.
  for (const [button, action] of [[pause, "pause"], [resume, "resume"]]) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        draw(await postJSON(jobPath(jobId, `/${action}`), undefined, { signal }));
        wake();
      } catch (error) {
        showNote(`${action === "pause" ? "Pause" : "Resume"} failed: ${error.message}`);
      } finally {
        button.disabled = false;
      }
    });
  }

  function showNote(text) {
    note.textContent = text;
    note.hidden = !text;
  }

  function draw(next) {
    job = next;
    document.title = `${job.status} · ${job.id} · ganft`;
    badges.replaceChildren(statusBadge(job.status), h("span", { class: "badge method" }, job.method));
    cancel.hidden = !CANCELLABLE.has(job.status);
    pause.hidden = !PAUSABLE.has(job.status);
    resume.hidden = job.status !== "paused";
    const steps = h("span", { class: "progress-text" }, progressText(job));
    progress.replaceChildren(progressBar(job.progress, job.status), steps,
      h("span", { class: "muted" }, ` · attempt ${job.attempt}`));
    errorBox.hidden = !job.error;
    if (job.error) errorBox.replaceChildren(h("strong", {}, job.error.code), " ", job.error.message);
    const resultSig = JSON.stringify([job.result, job.result ? null : metrics.latest()]);
    if (resultSig !== sig.result) {
      sig.result = resultSig;
      results.replaceChildren(...resultBody(job, metrics.latest()));
    }
    if (job.updated_at !== sig.updated) {
      sig.updated = job.updated_at;
      hyper.replaceChildren(...hyperparameterBody(job));
      details.replaceChildren(...detailBody(job));
    }
  }

  function drawCharts() {
    const groups = groupMetrics(metrics.byName());
    if (groups.length) charts.replaceChildren(...groups.map((g) => lineChart(g.title, g.series)));
  }

  async function refreshArtifacts() {
    const list = await getJSON(jobPath(jobId, "/artifacts"), { signal });
    const key = list.map((a) => `${a.name}:${a.sha256}`).join("|");
    if (key !== sig.artifacts) {
      sig.artifacts = key;
      artifacts.update(list);
    }
  }

  async function refresh() {
    const next = await getJSON(jobPath(jobId), { signal });
    if (await metrics.refresh(signal)) drawCharts();
    draw(next);
    if (next.status !== sig.status) {
      sig.status = next.status; // artifacts are registered together with a status change
      await refreshArtifacts();
    }
  }

  // Poll until the job is terminal (one last full read then), or until the view goes away.
  signal.addEventListener("abort", () => wake(), { once: true });
  (async () => {
    while (!signal.aborted) {
      try {
        await refresh();
        showNote("");
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.status === 404) {
          root.replaceChildren(h("section", { class: "card" }, h("h1", {}, "Job not found"),
            h("p", {}, `No job ${jobId} is visible with this API key.`), h("a", { href: "#/" }, "← Jobs")));
          return;
        }
        showNote(`Not updated: ${error.message}`);
      }
      if (job && TERMINAL.has(job.status)) return;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        wake = () => { clearTimeout(timer); resolve(); };
      });
    }
  })();

  followEvents(jobPath(jobId, "/events"), {
    signal,
    onEvent: (event) => {
      events.add(event);
      if (event.type === "status") {
        streamEnded = TERMINAL.has(event.data?.status);
        wake();
      } else if (event.type === "evaluation") {
        wake();
      } else if (event.type === "artifact") {
        // A new sample grid or curves.png of a running job: re-read the list; a changed sha256 refetches the image.
        refreshArtifacts().catch((error) => { if (!signal.aborted) showNote(`Artifacts not updated: ${error.message}`); });
      }
    },
    onState: (state) => { streamState.textContent = state === "live" ? "● live" : "reconnecting…"; },
    isDone: () => streamEnded || (job !== null && TERMINAL.has(job.status)),
  })
    .then(() => {
      if (!signal.aborted) streamState.textContent = `ended · ${fmtNumber(events.count)} events`;
    })
    .catch((error) => {
      if (!signal.aborted) streamState.textContent = `stream failed: ${error.message}`;
    });
}
