// Site-wide behaviour of templates/base.html, as a static module (the pages' Content-Security-
// Policy allows no inline script or handler).

// Copy buttons: <button data-copy> inside a .code block copies its <pre>/<code>;
// <button data-copy="some-id"> copies the element with that id.
document.addEventListener("click", async (event) => {
  const button = /** @type {HTMLElement | null} */ (/** @type {Element} */ (event.target).closest("[data-copy]"));
  if (!button) return;
  const source = button.dataset.copy
    ? document.getElementById(button.dataset.copy)
    : button.closest(".code")?.querySelector("pre, code");
  if (!source) return;
  const text = "value" in source ? String(source.value) : source.textContent.trim();
  const label = button.textContent;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    // No clipboard API (plain http on a LAN address): select the text for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    copied = document.execCommand && document.execCommand("copy");
  }
  button.textContent = copied ? "Copied" : "Press Ctrl+C";
  setTimeout(() => { button.textContent = label; }, 1800);
});

// Buttons with data-confirm ask first: "Revoke this token?" and the like.
document.addEventListener("click", (event) => {
  const button = /** @type {HTMLElement | null} */ (/** @type {Element} */ (event.target).closest("[data-confirm]"));
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});
