// A job's figures: the result table (ssgan against its supervised control, or adapt's FID/KID),
// the latest values while it runs, its hyperparameters and its details.

import { fmtDuration, fmtNumber, fmtTime, h } from "./dom.js";

const CLASSIFIER_ROWS = [
  ["accuracy", "Accuracy"],
  ["macro_f1", "Macro F1"],
  ["macro_precision", "Macro precision"],
  ["macro_recall", "Macro recall"],
];

function table(head, rows, attrs = {}) {
  return h("div", { class: "table-wrap" },
    h("table", attrs,
      head ? h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))) : null,
      h("tbody", {}, rows),
    ),
  );
}

/** A difference of two fractions in percentage points, "+4.17 pt" / "−0.83 pt" (as `ganft jobs watch`). */
function fmtPoints(delta, digits = 2) {
  if (delta === null || delta === undefined || !Number.isFinite(delta)) return "–";
  const points = Math.abs(delta * 100).toFixed(digits);
  return `${delta > 0 && Number(points) ? "+" : delta < 0 && Number(points) ? "−" : "±"}${points} pt`;
}

/** Accuracy, F1, precision, recall: four decimals, so the column lines up ("0.9160", not "0.916"). */
const fmtFraction = (value) => (Number.isFinite(value) ? value.toFixed(4) : "–");

function deltaCell(delta) {
  const tone = delta > 0 ? "up" : delta < 0 ? "down" : "flat";
  return h("td", { class: `num delta ${tone}` }, fmtPoints(delta));
}

const OUTCOMES = {
  helped: ["up", "The GAN helped"],
  hurt: ["down", "The GAN hurt"],
  no_difference: ["flat", "No difference within noise"],
};

/** The job's verdict (metrics.json `verdict`: outcome, difference, noise margin, the model to use); for a
 * result from before verdicts, the accuracy difference alone. */
function verdict(result, delta) {
  const v = result.verdict;
  if (v && OUTCOMES[v.outcome]) {
    const [tone, said] = OUTCOMES[v.outcome];
    const noise = Number.isFinite(v.margin) ? ` ± ${(v.margin * 100).toFixed(1)}` : "";
    const use = v.use === "control" ? "control.pt2, the supervised control" : "model.pt2, the GAN's classifier";
    return h("p", { class: `verdict ${tone}` },
      `${said}: ${fmtPoints(v.delta, 1).replace(/^±| pt$/g, "")}${noise} ${v.metric || "accuracy"} points against the `,
      `supervised control. Use ${use}.`);
  }
  if (delta === null || delta === undefined) return null;
  const points = `${fmtPoints(delta, 1).replace(" pt", "")} accuracy points`;
  if (delta > 0) return h("p", { class: "verdict up" }, `The GAN helped: ${points} over the supervised control.`);
  if (delta < 0) return h("p", { class: "verdict down" }, `The GAN did not help: ${points} against the supervised control.`);
  return h("p", { class: "verdict flat" }, "The GAN made no difference to accuracy against the supervised control.");
}

function ssganResult(result) {
  const ours = result.ssgan || {};
  const control = result.control || null;
  const rows = CLASSIFIER_ROWS.filter(([key]) => key in ours).map(([key, label]) => {
    const delta = control && key in control ? ours[key] - control[key] : null;
    return h("tr", {},
      h("th", { scope: "row" }, label),
      h("td", { class: "num" }, fmtFraction(ours[key])),
      h("td", { class: "num" }, control ? fmtFraction(control[key]) : "–"),
      deltaCell(delta),
    );
  });
  const parts = [
    verdict(result, result.delta_accuracy ?? (control ? ours.accuracy - control.accuracy : null)),
    table(["", "ssgan", "control", "Δ"], rows, { class: "result", id: "result-table" }),
  ];
  if (Array.isArray(ours.per_class) && ours.per_class.length) {
    const controlF1 = new Map((control?.per_class || []).map((c) => [c.class, c.f1]));
    parts.push(h("details", {},
      h("summary", {}, "Per-class figures"),
      table(["class", "precision", "recall", "F1", "control F1", "support"], ours.per_class.map((c) =>
        h("tr", {},
          h("th", { scope: "row" }, c.class),
          ["precision", "recall", "f1"].map((k) => h("td", { class: "num" }, fmtNumber(c[k]))),
          h("td", { class: "num" }, fmtNumber(controlF1.get(c.class))),
          h("td", { class: "num" }, fmtNumber(c.support)),
        ))),
    ));
  }
  if (Array.isArray(ours.confusion_matrix) && ours.confusion_matrix.length) {
    const names = (ours.per_class || []).map((c) => c.class);
    parts.push(h("details", {},
      h("summary", {}, "Confusion matrix (rows: true class, columns: predicted)"),
      table(["", ...ours.confusion_matrix.map((_, j) => names[j] ?? j)], ours.confusion_matrix.map((line, i) =>
        h("tr", {}, h("th", { scope: "row" }, names[i] ?? i), line.map((n) => h("td", { class: "num" }, n))))),
    ));
  }
  const counts = ["labeled_examples", "unlabeled_examples", "validation_examples"].filter((k) => k in result);
  if (counts.length) {
    parts.push(h("p", { class: "muted" },
      counts.map((k) => `${fmtNumber(result[k])} ${k.replace("_examples", "")}`).join(" · "),
      result.evaluated_with_ema ? " · evaluated with EMA weights" : ""));
  }
  return parts;
}

function adaptResult(result) {
  const rows = [
    ["fid", "FID (lower is better)"],
    ["kid", "KID (lower is better)"],
    ["augment_p", "Final augmentation p"],
    ["evaluator", "Evaluator network"],
    ["fid_reference", "Compared with"],
    ["steps", "Steps"],
  ].filter(([key]) => result[key] !== undefined && result[key] !== null)
    .map(([key, label]) => h("tr", { class: key === "fid" || key === "kid" ? "highlight" : "" },
      h("th", { scope: "row" }, label), h("td", { class: "num" }, fmtNumber(result[key]))));
  if (typeof result.seconds === "number") {
    rows.push(h("tr", {}, h("th", { scope: "row" }, "Training time"), h("td", { class: "num" }, fmtDuration(result.seconds))));
  }
  return [table(null, rows, { class: "result", id: "result-table" })];
}

function scalars(object) {
  return Object.entries(object || {}).filter(([, v]) => typeof v === "number" || typeof v === "string");
}

/** The Results card body: the final result when there is one, else the latest metric values. */
export function resultBody(job, latest) {
  const result = job.result;
  if (result && job.method === "ssgan" && result.ssgan) return ssganResult(result);
  if (result && job.method === "adapt") return adaptResult(result);
  if (result) {
    return [table(null, scalars(result).map(([k, v]) =>
      h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "num" }, fmtNumber(v)))), { class: "result", id: "result-table" })];
  }
  const names = Object.keys(latest).sort();
  if (!names.length) return [h("p", { class: "muted" }, "Figures appear here as the job reports them.")];
  return [
    h("p", { class: "muted" }, "Latest reported values (the final table appears when the job succeeds):"),
    table(["metric", "step", "value"], names.map((name) => h("tr", {},
      h("th", { scope: "row" }, name), h("td", { class: "num" }, latest[name][0]), h("td", { class: "num" }, fmtNumber(latest[name][1]))))),
  ];
}

export function hyperparameterBody(job) {
  const entries = Object.entries(job.hyperparameters || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return [h("p", { class: "muted" }, "Defaults only.")];
  return [table(null, entries.map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v)))),
  { class: "kv" })];
}

/** A fork's parent (a link to its page; the parent may have been deleted since) and step. */
function forkedFrom({ job_id: parent, step }) {
  const at = ` at step ${step}`;
  return parent ? h("span", {}, h("a", { href: `#/jobs/${parent}`, class: "mono" }, parent), at) : `(deleted job)${at}`;
}

export function detailBody(job) {
  const link = (id) => (id ? h("span", { class: "mono" }, id) : "–");
  const rows = [
    ["Dataset", link(job.dataset_id)],
    ["Validation dataset", link(job.validation_dataset_id)],
    ["Base model", link(job.base_model_id)],
    job.forked_from ? ["Forked from", forkedFrom(job.forked_from)] : null,
    job.evaluator_model_id ? ["Evaluator", link(job.evaluator_model_id)] : null,
    ["Output model", link(job.output_model_id)],
    ["Priority", job.priority],
    ["Seed", String(job.seed)],
    ["Attempt", String(job.attempt)],
    job.max_runtime_s ? ["Max runtime", fmtDuration(job.max_runtime_s)] : null,
    ["Created", fmtTime(job.created_at)],
    ["Started", fmtTime(job.started_at)],
    ["Finished", fmtTime(job.finished_at)],
    job.started_at && job.finished_at
      ? ["Ran for", fmtDuration((new Date(job.finished_at) - new Date(job.started_at)) / 1000)] : null,
    ...Object.entries(job.metadata || {}).map(([k, v]) => [`metadata.${k}`, v]),
  ].filter(Boolean);
  return [table(null, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v))), { class: "kv" })];
}
