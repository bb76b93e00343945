// A job's artifacts: the table (sizes, sha256, download buttons) and the pictures among them
// (the latest sample grid; the trainer's curves.png, in a card of its own at its own width so that its
// ticks and legends stay readable). Both are fetched with the key:
// fetch -> Blob -> object URL, since `<img src>` and plain links cannot send a header.

import { downloadFile, getBlob, jobPath } from "./api.js";
import { fmtBytes, h } from "./dom.js";

const artifactPath = (jobId, name) => jobPath(jobId, `/artifacts/${name.split("/").map(encodeURIComponent).join("/")}`);

/** The sample grid to show: `samples.png`, else the last `samples…png` by name (e.g. samples/step-900.png). */
function sampleArtifact(artifacts) {
  const grids = artifacts.filter((a) => /(^|\/)samples[^/]*\.png$/.test(a.name)).sort((a, b) => a.name.localeCompare(b.name));
  return grids.find((a) => a.name === "samples.png") || grids[grids.length - 1] || null;
}

export class ArtifactPanel {
  constructor(jobId, signal) {
    this.jobId = jobId;
    this.signal = signal;
    this.images = new Map(); // name -> {sha256, url}
    this.wanted = new Map(); // name -> the sha256 last asked for (a slower, older fetch must not win)
    this.table = h("div", { class: "table-wrap" });
    this.pictures = h("div", { class: "pictures" }, h("p", { class: "muted" }, "No sample grid yet."));
    this.curves = h("div", { class: "pictures curves-png" },
      h("p", { class: "muted" }, "The trainer draws curves.png at its first evaluation."));
    signal.addEventListener("abort", () => this.images.forEach(({ url }) => URL.revokeObjectURL(url)), { once: true });
  }

  update(artifacts) {
    this.drawTable(artifacts);
    const samples = sampleArtifact(artifacts);
    if (samples) this.pictures.replaceChildren(this.picture(samples, "Latest sample grid", "samples-img"));
    const curves = artifacts.find((a) => a.name === "curves.png");
    if (curves) this.curves.replaceChildren(this.picture(curves, "Drawn by the trainer at its last evaluation", "curves-img"));
  }

  drawTable(artifacts) {
    if (!artifacts.length) {
      this.table.replaceChildren(h("p", { class: "muted" },
        "No artifacts yet: the sample grid and curves appear at the first evaluation, the rest when the job succeeds."));
      return;
    }
    const rows = artifacts.map((a) => h("tr", {},
      h("td", { class: "mono" }, a.name),
      h("td", { class: "num" }, fmtBytes(a.size_bytes)),
      h("td", { class: "mono sha", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`),
      h("td", {}, a.content_type),
      h("td", {}, this.downloadButton(a)),
    ));
    this.table.replaceChildren(h("table", { class: "artifacts" },
      h("thead", {}, h("tr", {}, ["Name", "Size", "sha256", "Type", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
  }

  downloadButton(artifact) {
    const button = h("button", { type: "button", class: "secondary small" }, "Download");
    button.addEventListener("click", async () => {
      button.disabled = true;
      button.textContent = "Downloading…";
      try {
        await downloadFile(artifactPath(this.jobId, artifact.name), artifact.name.split("/").pop());
        button.textContent = "Download";
      } catch (error) {
        button.textContent = "Failed";
        button.title = error.message;
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  picture(artifact, caption, id) {
    const img = h("img", { id, alt: `${caption} (${artifact.name})`, decoding: "async" });
    const link = h("a", { target: "_blank", rel: "noopener", title: "Open full size" }, img);
    const show = (url) => { img.src = url; link.href = url; };
    const cached = this.images.get(artifact.name);
    if (cached && cached.sha256 === artifact.sha256) {
      show(cached.url);
    } else {
      // A running job replaces its pictures: the blob (and so the <img>'s object URL) is keyed by sha256,
      // and the request itself is never answered from the browser's cache (api.js: `no-store`).
      this.wanted.set(artifact.name, artifact.sha256);
      if (cached) show(cached.url); // the previous version stays up until the new one has arrived
      getBlob(artifactPath(this.jobId, artifact.name), { signal: this.signal })
        .then((blob) => {
          if (this.wanted.get(artifact.name) !== artifact.sha256) return; // a newer version was asked for
          const previous = this.images.get(artifact.name);
          if (previous) URL.revokeObjectURL(previous.url);
          const url = URL.createObjectURL(blob);
          this.images.set(artifact.name, { sha256: artifact.sha256, url });
          show(url);
        })
        .catch((error) => { if (!this.signal.aborted) img.alt = `${caption}: ${error.message}`; });
    }
    return h("figure", { class: "picture" }, link, h("figcaption", {}, caption, " · ", h("span", { class: "mono" }, artifact.name)));
  }
}
