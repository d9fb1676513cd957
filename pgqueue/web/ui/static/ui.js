// The dashboard's only script: confirmation of destructive forms and the live tail.
"use strict";

document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

const TAIL_ROWS = 100;
const TAIL_EVERY_MS = 2000;

function tailRow(message) {
  const row = document.createElement("tr");
  row.dataset.offset = message.offset;
  for (const [text, numeric] of [
    [String(message.offset), true],
    [message.published_at, false],
    [message.key || "", false],
    [message.payload, false],
  ]) {
    const cell = document.createElement("td");
    if (numeric) cell.className = "num";
    // textContent, never innerHTML: payloads are whatever publishers sent.
    cell.textContent = text;
    row.appendChild(cell);
  }
  return row;
}

function startTail(table) {
  const body = table.tBodies[0];
  let after = Number(table.dataset.after);
  async function poll() {
    try {
      const response = await fetch(`${table.dataset.tail}?after=${after}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) {
        table.dataset.state = `stopped (${response.status}): reload the page`;
        return;
      }
      const { messages } = await response.json();
      for (const message of messages) {
        body.insertBefore(tailRow(message), body.firstChild);
        after = message.offset;
      }
      while (body.rows.length > TAIL_ROWS) body.deleteRow(body.rows.length - 1);
      table.dataset.after = String(after);
      table.dataset.state = "live";
      // A full batch means more are waiting: ask again at once.
      window.setTimeout(poll, messages.length === 50 ? 0 : TAIL_EVERY_MS);
    } catch (error) {
      table.dataset.state = "retrying";
      window.setTimeout(poll, TAIL_EVERY_MS);
    }
  }
  poll();
}

const tail = document.getElementById("tail");
if (tail) startTail(tail);
