// Server-Sent Events over fetch(): EventSource cannot send the Authorization header, so the
// `text/event-stream` body is read with a stream reader and parsed here (WHATWG HTML §9.2.6).
// Event ids are remembered: a reconnect sends `Last-Event-ID` and the server resumes after it.

import { authHeaders } from "./api.js";
import { sleep } from "./dom.js";

/** Parse a text/event-stream chunk by chunk; calls onFrame({id, event, data}) per dispatched event. */
export class EventStreamParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.lastId = null; // the stream's last event id (persists across events, as the spec says)
    this.retryMs = null;
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    // A trailing CR may be the first half of a CRLF split between chunks: it waits for the next one.
    const held = this.buffer.endsWith("\r") ? "\r" : "";
    const lines = this.buffer.slice(0, this.buffer.length - held.length).split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + held; // an incomplete last line waits for the next chunk
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onFrame({ id: this.lastId, event: this.event || "message", data: this.data.join("\n") });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment (`: ping`)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
  }
}

/**
 * Follow a job's event stream until `isDone()` says so after the stream ends, or `signal` aborts.
 * onEvent({seq, type, data, created_at}) gets each event once, in order; onState("live" | "reconnecting")
 * reports the connection. Errors other than the network's (401, 404) end the loop by throwing.
 */
export async function followEvents(path, { signal, onEvent, onState = () => {}, isDone = () => false }) {
  let lastId = null;
  let retryMs = 3000;
  while (!signal.aborted) {
    const parser = new EventStreamParser((frame) => {
      lastId = frame.id;
      try {
        onEvent(JSON.parse(frame.data));
      } catch (error) {
        console.warn("ganft: unreadable event", frame, error);
      }
    });
    parser.lastId = lastId;
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await fetch(path, { headers, signal, cache: "no-store" });
      if (!response.ok) {
        const problem = await response.json().catch(() => null);
        const error = new Error(problem?.detail || `${response.status} ${response.statusText}`);
        error.status = response.status;
        throw error;
      }
      onState("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error.status && error.status !== 503 && error.status !== 429) throw error;
    }
    retryMs = parser.retryMs ?? retryMs;
    if (signal.aborted || isDone()) return;
    onState("reconnecting");
    await sleep(retryMs, signal);
  }
}
