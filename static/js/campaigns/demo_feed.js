// Public demo pages: follow a campaign's results through /campaigns/<id>/demo/feed.json.
// The feed is keyset-paginated on the time each result came back: the first calls catch up
// with everything so far (in pages), then it is polled every second until the campaign ends.

import { formatNumber } from "./format.js";

const FINISHED = ["completed", "cancelled", "failed"];

export function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const utf8 = new TextDecoder();
export const decodeText = (text) => utf8.decode(decodeBase64(text));

function updateHeader(root, c, received) {
  const pct = c.tasks_total ? ((c.tasks_done + c.tasks_failed) / c.tasks_total) * 100 : 0;
  const bar = document.getElementById("demo-progress-bar");
  bar.style.width = `${pct.toFixed(1)}%`;
  bar.classList.toggle("is-done", c.state === "completed");
  document.getElementById("demo-progress").setAttribute("aria-valuenow", String(Math.floor(pct)));
  for (const [field, value] of [["tasks_done", c.tasks_done], ["tasks_total", c.tasks_total], ["received", received]]) {
    for (const el of root.querySelectorAll(`[data-field="${field}"]`)) el.textContent = formatNumber(value);
  }
  for (const el of root.querySelectorAll('[data-field="tasks_unit"]')) el.textContent = c.tasks_total === 1 ? "task" : "tasks";
  const badge = root.querySelector('[data-field="state"]');
  badge.textContent = c.state;
  badge.className = `badge badge-${c.state}`;
  root.dataset.state = c.state;
}

/**
 * Call onResults(results) for each new batch (each result {seq, input, output}, base64) and
 * onCampaign(campaign) and onBody(body) after each response; with `tail`, the first response
 * holds only the newest `tail` results (pages that need not replay everything). Results of a task already seen (replicas) are
 * dropped here, so pages handle each task once.
 */
/**
 * `root` is the element whose data-feed-url is followed (default #demo, the page's campaign,
 * whose header it keeps up to date); another root (a second campaign on the page) gets no
 * header updates.
 * @param {{
 *   onResults: (results: any[]) => void,
 *   onCampaign?: (campaign: any) => void,
 *   onBody?: (body: any) => void,
 *   interval?: number,
 *   tail?: number | null,
 *   root?: HTMLElement | null,
 * }} options
 */
export function followFeed({ onResults, onCampaign = () => {}, onBody = () => {}, interval = 1000, tail = null, root = null }) {
  const header = root === null;
  root = root ?? document.getElementById("demo");
  const seen = new Set();
  let cursor = "";
  let received = 0;
  async function step() {
    let more = false;
    let finished = false;
    try {
      const url = new URL(root.dataset.feedUrl, location.href);
      if (cursor) url.searchParams.set("cursor", cursor);
      else if (tail != null) url.searchParams.set("tail", String(tail));
      const res = await fetch(url, { cache: "no-store" });
      if (res.ok) {
        const body = await res.json();
        const fresh = body.results.filter((r) => !seen.has(r.seq));
        for (const r of fresh) seen.add(r.seq);
        received += fresh.length;
        if (fresh.length) onResults(fresh);
        cursor = body.cursor || cursor;
        more = body.more;
        if (header) updateHeader(root, body.campaign, received);
        onCampaign(body.campaign);
        onBody(body);
        // A completed campaign with a reducer still gets its final output: keep asking.
        finished = FINISHED.includes(body.campaign.state) && !more && !body.campaign.reducing;
        root.dataset.received = String(received);
      }
    } catch (err) {
      console.warn("demo feed failed", err);
    }
    if (finished) {
      root.dataset.caughtUp = "true";
      return;
    }
    if (!more) root.dataset.caughtUp = "true";
    setTimeout(step, more ? 0 : interval);
  }
  step();
}
