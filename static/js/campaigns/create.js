// Campaign creation form: show only the fields of the chosen input source. Without JavaScript
// every field stays visible and the server ignores the ones that do not apply.

const form = document.getElementById("campaign-form");

function showSource() {
  const chosen = form.querySelector('input[name="input_source"]:checked')?.value;
  for (const el of form.querySelectorAll("[data-source]")) {
    el.hidden = chosen !== undefined && el.dataset.source !== chosen;
  }
}

if (form) {
  form.addEventListener("change", (event) => {
    if (event.target.name === "input_source") showSource();
  });
  showSource();
}
