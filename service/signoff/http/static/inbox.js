// Live inbox: the server re-renders (and escapes) the list; this only swaps it in.
"use strict";
(function () {
  var rows = document.getElementById("rows");
  if (!rows || !window.EventSource) { return; }
  var status = document.getElementById("live-status");
  var source = new EventSource(rows.getAttribute("data-live"));
  source.addEventListener("inbox", function (event) {
    // Same-origin HTML rendered by the server's autoescaping templates, not client data.
    rows.innerHTML = event.data;
    if (status) { status.textContent = "Updated " + new Date().toLocaleTimeString(); }
  });
  source.onerror = function () {
    if (status) { status.textContent = "Reconnecting..."; }
  };
})();
