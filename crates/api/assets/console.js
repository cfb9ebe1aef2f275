// latchkey console: the Copy button beside a secret shown once. Pages work
// without this script; it only shows the button and copies on a click.
"use strict";
for (const button of document.querySelectorAll("button[data-copy]")) {
  const source = document.getElementById(button.dataset.copy);
  const status = document.getElementById(button.dataset.status);
  if (!source || !navigator.clipboard) continue;
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(source.value);
      if (status) status.textContent = "Copied to the clipboard.";
    } catch {
      source.select();
      if (status) status.textContent = "Copying was refused: press Ctrl+C to copy the selection.";
    }
  });
}
