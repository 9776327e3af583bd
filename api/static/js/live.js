// The live stream (GET /api/stream, Server-Sent Events) read with fetch, because
// EventSource cannot send an Authorization header. Reconnects with backoff and resumes
// from the last event id, so no point is lost or repeated across a server restart.
import { ApiError, qs, reportAuth, reportOffline, token } from "./api.js";

/**
 * Follow runs live.
 * @param {object} params query of /api/stream (run: [...], key: [...], project, min_interval)
 * @param {(event: string, data: object) => void} onEvent called for snapshot/delta/rewind/error
 *   (a "rewind" comes right before the delta with the new attempt's points: drop the run's
 *   points at steps >= from_step first)
 * @param {{onState?: (state: string) => void}} [opts] state: "live" | "reconnecting" | "closed"
 * @returns {{close: () => void}}
 */
export function follow(params, onEvent, opts = {}) {
  const ctl = new AbortController();
  let lastId = "";
  let closed = false;
  const state = (s) => opts.onState && opts.onState(s);

  async function once() {
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${token()}` };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const r = await fetch(`/api/stream${qs(params)}`, { headers, signal: ctl.signal, cache: "no-store" });
    if (!r.ok) {
      let err = {};
      try { err = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, err.error || `HTTP ${r.status}`, err.hint || "", r.status === 401 ? "auth" : "http");
    }
    state("live");
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let ev = "message", data = "", id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const f = i < 0 ? line : line.slice(0, i);
          const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (f === "event") ev = v;
          else if (f === "data") data += (data ? "\n" : "") + v;
          else if (f === "id") id = v;
        }
        if (id) lastId = id;
        if (data) {
          let parsed;
          try { parsed = JSON.parse(data); } catch { continue; }
          if (ev === "reset") {
            // The server no longer holds our cursor: points sent while we were away are not
            // coming. The page re-reads its state (main.js re-renders it).
            window.dispatchEvent(new CustomEvent("assay:stream-reset", { detail: parsed }));
            continue;
          }
          onEvent(ev, parsed);
        }
      }
    }
  }

  (async () => {
    let wait = 500;
    while (!closed) {
      try {
        await once();
        wait = 500;
      } catch (e) {
        if (closed || (e && e.name === "AbortError")) break;
        if (e instanceof ApiError && e.kind === "auth") {
          reportAuth(e.error);
          onEvent("error", { error: e.error, hint: e.hint });
          state("closed");
          return;
        }
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          onEvent("error", { error: e.error, hint: e.hint });
          state("closed");
          return;
        }
        reportOffline();
      }
      if (closed) break;
      state("reconnecting");
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 5000);
    }
    state("closed");
  })();

  return {
    close() {
      closed = true;
      ctl.abort();
    },
  };
}

/** The stream cursor that resumes a run right after the given ingested seq. */
export function cursorFor(seqs) {
  return btoa(JSON.stringify(seqs)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
