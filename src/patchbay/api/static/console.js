// The console's only script: a running run's counters follow its progress (the page
// refreshes itself without JavaScript), and the page reloads once the run has ended.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector("[data-progress]");
  if (!box) return;
  const follow = async () => {
    const answer = await fetch(box.dataset.progress, {credentials: "same-origin"});
    if (!answer.ok) return;
    const run = await answer.json();
    if (run.status !== "running") { window.location.reload(); return; }
    box.querySelector("[data-batches]").textContent = run.batches;
    for (const [name, value] of Object.entries(run.counters)) {
      const shown = box.querySelector(`[data-counter="${CSS.escape(name)}"]`);
      if (shown) shown.textContent = value;
    }
    setTimeout(follow, 1500);
  };
  setTimeout(follow, 1500);
});
