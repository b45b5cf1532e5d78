// Campaign creation form: show only the fields of the chosen input source; after a refused
// submission, bring the first bad field into view and focus it; check the task file in the
// browser as soon as it is chosen (a bad line is reported before the upload, and the chosen file
// stays chosen). Without JavaScript every field stays visible, the server ignores the ones that
// do not apply and checks the file itself.

import { formatOf, taskFileProblem } from "./task_file.js";

const form = /** @type {HTMLFormElement | null} */ (document.getElementById("campaign-form"));

function showSource() {
  if (!form) return;
  const chosen = /** @type {HTMLInputElement | null} */ (
    form.querySelector('input[name="input_source"]:checked')
  )?.value;
  for (const el of form.querySelectorAll("[data-source]")) {
    /** @type {HTMLElement} */ (el).hidden = chosen !== undefined && /** @type {HTMLElement} */ (el).dataset.source !== chosen;
  }
}

/** Show (or clear, with null) the browser's own finding about the task file. */
function setFileProblem(/** @type {HTMLInputElement} */ input, /** @type {string | null} */ problem) {
  const field = input.closest(".field");
  let note = field?.querySelector("[data-client-error]");
  if (problem === null) {
    note?.remove();
    input.removeAttribute("aria-invalid");
    return;
  }
  if (!note) {
    note = document.createElement("ul");
    note.className = "errorlist";
    note.setAttribute("data-client-error", "");
    note.id = `${input.id}-client-error`;
    note.setAttribute("role", "alert");
    input.before(note);
    input.setAttribute("aria-describedby", note.id);
  }
  note.replaceChildren(Object.assign(document.createElement("li"), { textContent: `The task file was rejected: ${problem}` }));
  input.setAttribute("aria-invalid", "true");
}

/** @type {Promise<string | null> | null} */
let fileCheck = null;

async function checkFile(/** @type {HTMLInputElement} */ input) {
  const file = input.files?.[0];
  if (!file) return null;
  const maxInput = Number(form?.dataset.maxInput) || 1024 * 1024;
  const maxUpload = Number(form?.dataset.maxUpload) || Infinity;
  if (file.size > maxUpload) {
    return `the file is ${file.size} bytes, above the ${maxUpload}-byte upload limit`;
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  return taskFileProblem(bytes, { format: formatOf(file.name), maxInput });
}

function focusField(/** @type {HTMLElement} */ el) {
  el.scrollIntoView({ block: "center" });
  el.focus({ preventScroll: true });
}

if (form) {
  const taskFile = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="task_file"]'));
  form.addEventListener("change", (event) => {
    const target = /** @type {HTMLInputElement} */ (event.target);
    if (target.name === "input_source") showSource();
    if (taskFile && target === taskFile) {
      setFileProblem(taskFile, null);
      fileCheck = checkFile(taskFile);
      fileCheck.then((problem) => setFileProblem(taskFile, problem));
    }
  });
  form.addEventListener("submit", (event) => {
    const source = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="input_source"]:checked'));
    if (!taskFile || !fileCheck || source?.value !== "file") return;
    // Wait for the check of the chosen file; submit only if it passed.
    event.preventDefault();
    fileCheck.then((problem) => {
      setFileProblem(taskFile, problem);
      if (problem === null) form.submit();
      else focusField(taskFile);
    });
  });
  showSource();
  // The server refused the form: its summary is at the top; the first bad field gets focus.
  if (document.getElementById("error-summary")) {
    const bad = /** @type {HTMLElement | null} */ (form.querySelector('[aria-invalid="true"]'));
    if (bad) focusField(bad);
  }
}
