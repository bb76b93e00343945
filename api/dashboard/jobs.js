// The job list (`#/` or `#/?status=running`): status badges and progress bars, refreshed every
// 2 s while the tab is visible, filtered by status, paged with next_cursor ("Load more").

import { getJSON } from "./api.js";
import { fmtAgo, fmtTime, h, progressBar, progressText, sleep, statusBadge } from "./dom.js";

const PAGE = 25;
const MAX_LIMIT = 200; // the API's largest page
const POLL_MS = 2000;
export const STATUSES = ["queued", "running", "cancelling", "pausing", "paused", "succeeded", "failed", "cancelled"];

function row(job) {
  return h(
    "tr",
    { dataset: { jobId: job.id, status: job.status } },
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id)),
    h("td", {}, job.method),
    h("td", {}, job.priority === "normal" ? "" : h("span", { class: `badge priority-${job.priority}` }, job.priority)),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "progress-cell" }, progressBar(job.progress, job.status), h("small", {}, progressText(job))),
    h("td", { title: fmtTime(job.created_at) }, fmtAgo(job.created_at)),
  );
}

export function renderJobList(root, signal, query) {
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  let jobs = [];
  let nextCursor = null;

  const filter = h(
    "select",
    {
      id: "status-filter",
      "aria-label": "Filter by status",
      onchange: (event) => { location.hash = event.target.value ? `#/?status=${event.target.value}` : "#/"; },
    },
    h("option", { value: "" }, "all statuses"),
    STATUSES.map((name) => h("option", { value: name }, name)),
  );
  filter.value = status;
  const live = h("span", { class: "live" }, "loading…");
  const tbody = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, status ? `No ${status} jobs.` : "No jobs yet: POST /v1/jobs to start one.");
  const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => loadMore() }, "Load more");

  root.append(
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h1", {}, "Jobs"), filter, live),
      h("div", { class: "table-wrap" },
        h("table", { class: "jobs" },
          h("thead", {}, h("tr", {}, ["Job", "Method", "Priority", "Status", "Progress", "Created"].map((t) => h("th", {}, t)))),
          tbody,
        ),
      ),
      empty,
      more,
    ),
  );

  const listPath = (limit, after) => {
    const params = new URLSearchParams({ limit: String(limit) });
    if (status) params.set("status", status);
    if (after) params.set("after", after);
    return `v1/jobs?${params}`;
  };

  function draw() {
    tbody.replaceChildren(...jobs.map(row));
    empty.hidden = jobs.length > 0;
    more.hidden = !nextCursor;
  }

  // Re-read the pages already shown (up to MAX_LIMIT rows); rows beyond that keep their last state.
  async function refresh() {
    const shown = Math.min(MAX_LIMIT, Math.max(PAGE, jobs.length));
    const page = await getJSON(listPath(shown), { signal });
    const tail = jobs.length > shown ? jobs.slice(shown) : [];
    const seen = new Set(page.data.map((job) => job.id));
    jobs = [...page.data, ...tail.filter((job) => !seen.has(job.id))];
    if (!tail.length) nextCursor = page.next_cursor;
    draw();
  }

  async function loadMore() {
    if (!nextCursor) return;
    more.disabled = true;
    try {
      const page = await getJSON(listPath(PAGE, nextCursor), { signal });
      const seen = new Set(jobs.map((job) => job.id));
      jobs = [...jobs, ...page.data.filter((job) => !seen.has(job.id))];
      nextCursor = page.next_cursor;
      draw();
    } finally {
      more.disabled = false;
    }
  }

  (async () => {
    while (!signal.aborted) {
      if (!document.hidden) {
        try {
          await refresh();
          live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
          live.classList.remove("error");
        } catch (error) {
          if (signal.aborted) return;
          live.textContent = `not updated: ${error.message}`;
          live.classList.add("error");
        }
      }
      await sleep(POLL_MS, signal);
    }
  })();
}
