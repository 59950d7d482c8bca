// Fluxo console: a few lines of plain JavaScript. Every page works without it; it adds
// submit-on-change for the language switch and live updates over server-sent events.
"use strict";

document.documentElement.classList.add("js");

document.addEventListener("change", (event) => {
  const field = event.target;
  if (field instanceof HTMLSelectElement && field.hasAttribute("data-autosubmit")) {
    field.form.requestSubmit();
  }
});

// An element with data-live="URL" listens to that event stream; each "update" event is a JSON
// object {element id: html} rendered by the server's templates (already escaped there).
function listen(element) {
  const source = new EventSource(element.getAttribute("data-live"));
  source.addEventListener("update", (event) => {
    const parts = JSON.parse(event.data);
    for (const [id, html] of Object.entries(parts)) {
      const target = document.getElementById(id);
      if (target) {
        target.innerHTML = html;
      }
    }
    document.dispatchEvent(new CustomEvent("fluxo:updated", { detail: Object.keys(parts) }));
  });
  source.addEventListener("done", () => source.close());
  // Leaving the page closes the stream first, so the browser reports no aborted request.
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(listen);
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
});
