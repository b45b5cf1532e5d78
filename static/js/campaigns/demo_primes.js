// Primes demo: list the newest primes as results arrive, with the count of every prime found
// so far (counted by the server: the page starts from the newest results, not from the first).
// Each result is the primes of one range "LO HI", one per line.

import { decodeText, followFeed } from "./demo_feed.js";
import { formatNumber } from "./format.js";

const SHOW = 120;
const list = document.getElementById("primes-list");
const countEl = document.getElementById("prime-count");
const largestEl = document.getElementById("largest-prime");
let count = 0;
let largest = -1n;

function onResults(results) {
  const newest = [];
  for (const r of results) {
    const primes = decodeText(r.output).split("\n").filter(Boolean);
    for (const p of primes) {
      const value = BigInt(p);
      if (value > largest) largest = value;
    }
    newest.push(...primes.slice(-Math.ceil(SHOW / results.length)));
  }
  if (largest >= 0n) largestEl.textContent = formatNumber(largest);
  const fragment = document.createDocumentFragment();
  for (const p of newest.slice(-SHOW).reverse()) {
    const li = document.createElement("li");
    li.textContent = p;
    fragment.append(li);
  }
  list.prepend(fragment);
  while (list.children.length > SHOW) list.lastElementChild.remove();
  window.ccgscPrimes = { count, largest: largest.toString() };
}

followFeed({
  onResults,
  onBody(body) {
    if (!body.summary) return;
    count = body.summary.primes;
    countEl.textContent = formatNumber(count);
    window.ccgscPrimes = { count, largest: largest.toString() };
  },
  tail: SHOW,
});
