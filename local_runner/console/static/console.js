// The runner console's only script: refresh the page's live part and confirm destructive actions.
"use strict";
(function () {
  const live = document.getElementById("live");
  const stamp = document.getElementById("updated");
  const period = live ? Number(live.dataset.refresh || 0) : 0;
  let busy = false;

  async function refresh() {
    if (busy || document.hidden || document.activeElement?.closest?.("#live form")) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Console-Fragment": "1" },
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      live.innerHTML = await response.text();
      const updated = live.querySelector("[data-updated]");
      stamp.textContent = "updated " + (updated ? updated.dataset.updated : new Date().toISOString()) + " UTC";
      stamp.classList.remove("stale");
    } catch (error) {
      stamp.classList.add("stale");
      stamp.title = "last refresh failed: " + error.message;
    } finally {
      busy = false;
    }
  }

  if (period > 0) {
    window.setInterval(refresh, period);
  }
  document.addEventListener("submit", function (event) {
    const message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
})();
