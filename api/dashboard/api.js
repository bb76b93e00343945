// Calls to the v1 API with the user's key (`Authorization: Bearer`). Paths are relative
// ("v1/jobs"), so the dashboard also works behind a reverse proxy that mounts it under a prefix.

const KEY_STORAGE = "ganft.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  window.dispatchEvent(new CustomEvent("ganft:key"));
}

/** An API error with the problem document's human message (`detail`). */
export class ApiError extends Error {
  constructor(status, message, problem) {
    super(message);
    this.status = status;
    this.problem = problem;
  }
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${getKey()}`, ...extra };
}

async function failure(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not a problem document (a proxy's HTML error page): the status says enough
  }
  const message = problem?.detail || `${response.status} ${response.statusText}`;
  if (response.status === 401) window.dispatchEvent(new CustomEvent("ganft:unauthorized", { detail: message }));
  return new ApiError(response.status, message, problem);
}

/** fetch() with the key; throws ApiError on any non-2xx answer. */
export async function request(path, { method = "GET", headers = {}, body, signal } = {}) {
  const response = await fetch(path, { method, headers: authHeaders(headers), body, signal, cache: "no-store" });
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

export async function postJSON(path, payload, options = {}) {
  const body = payload === undefined ? undefined : JSON.stringify(payload);
  return (await request(path, { ...options, method: "POST", body, headers: { "Content-Type": "application/json" } })).json();
}

/** The bytes of a file as a Blob (`<img src>` and plain links cannot send the key). */
export async function getBlob(path, options) {
  return (await request(path, options)).blob();
}

/** Download a file with the key: fetch -> Blob -> a temporary object URL clicked as a link. */
export async function downloadFile(path, filename) {
  const url = URL.createObjectURL(await getBlob(path));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // the browser has taken the bytes by then
}

export const jobPath = (id, rest = "") => `v1/jobs/${encodeURIComponent(id)}${rest}`;
