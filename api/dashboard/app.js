// The dashboard's entry point: the API key (asked once, kept in localStorage, changed in the
// header) and hash routing between the job list (`#/`) and a job (`#/jobs/<id>`).

import { getKey, setKey } from "./api.js";
import { h } from "./dom.js";
import { renderJob } from "./job.js";
import { renderJobList } from "./jobs.js";

const view = document.getElementById("view");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
let controller = null; // aborts the current view's polling, streams and downloads

function keyPrompt(message) {
  const input = h("input", {
    id: "key-prompt-input", type: "password", placeholder: "gft_…", required: true, autocomplete: "off",
    spellcheck: "false", "aria-label": "API key",
  });
  const form = h("form", { class: "card key-prompt", id: "key-prompt" },
    h("h1", {}, "Your API key"),
    h("p", {}, "The dashboard calls the ganft API with your key; it stays in this browser (localStorage). ",
      "Create one with ", h("code", {}, "ganft admin create-key --tenant NAME"), "."),
    message ? h("p", { class: "error-box", role: "alert" }, message) : null,
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Use this key")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setKey(input.value.trim());
  });
  return [form, input];
}

function show(renderer) {
  controller?.abort();
  controller = new AbortController();
  view.replaceChildren();
  renderer(controller.signal);
}

function route() {
  if (!getKey()) {
    show(() => {
      const [form, input] = keyPrompt();
      view.append(form);
      input.focus();
    });
    return;
  }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const match = (path || "/").match(/^\/jobs\/([^/]+)$/);
  if (match) show((signal) => renderJob(view, signal, decodeURIComponent(match[1])));
  else show((signal) => renderJobList(view, signal, new URLSearchParams(query || "")));
}

window.addEventListener("hashchange", route);
window.addEventListener("ganft:key", () => {
  keyInput.value = getKey();
  route();
});
window.addEventListener("ganft:unauthorized", (event) => {
  if (document.getElementById("key-prompt")) return; // several requests fail together
  show(() => {
    const [form, input] = keyPrompt(`The API refused this key: ${event.detail}`);
    view.append(form);
    input.focus();
  });
});
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setKey(keyInput.value.trim());
});
keyInput.value = getKey();
route();
