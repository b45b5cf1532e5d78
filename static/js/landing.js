// Landing page: refresh the platform status and the public campaigns every two seconds.
// The status endpoint is cached server-side for a second, so many open pages cost little.

const fmt = new Intl.NumberFormat();

function pick(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj);
}

async function refreshStatus(root) {
  const res = await fetch(root.dataset.url, { cache: "no-store" });
  if (!res.ok) return;
  const data = await res.json();
  for (const el of root.querySelectorAll("[data-field]")) {
    const value = pick(data, el.dataset.field);
    if (value != null) el.textContent = typeof value === "number" ? fmt.format(value) : value;
  }
}

async function refreshCampaigns(root) {
  const res = await fetch(root.dataset.url, { cache: "no-store" });
  if (!res.ok) return;
  const { campaigns } = await res.json();
  for (const c of campaigns) {
    const card = root.querySelector(`.campaign[data-id="${c.id}"]`);
    if (!card) continue; // new campaigns appear on the next page load
    card.querySelector(".progress-bar").style.width = `${(c.progress * 100).toFixed(1)}%`;
    card.querySelector('[data-field="tasks_done"]').textContent = fmt.format(c.tasks_done);
    card.querySelector('[data-field="tasks_total"]').textContent = fmt.format(c.tasks_total);
    card.querySelector('[data-field="tasks_unit"]').textContent = c.tasks_total === 1 ? "task" : "tasks";
    const badge = card.querySelector('[data-field="state"]');
    badge.textContent = c.state;
    badge.className = `badge badge-${c.state}`;
    // Only a running campaign is live; a finished one has a result to look at.
    const demo = card.querySelector('[data-field="demo"]');
    if (demo) demo.textContent = c.state === "running" ? "Watch it live" : "See the result";
  }
}

function every(ms, fn) {
  const tick = async () => {
    try {
      await fn();
    } catch (err) {
      console.warn("refresh failed", err);
    }
    setTimeout(tick, ms);
  };
  tick();
}

const status = document.getElementById("status");
const campaigns = document.getElementById("campaigns");
if (status) every(2000, () => refreshStatus(status));
if (campaigns) every(2000, () => refreshCampaigns(campaigns));
