// Live updates: priority changes and officer alerts in the officer's area (server-sent events).
// The server filters by area; this script only shows what arrives and lets the map recolour.
(function () {
  "use strict";
  var list = document.getElementById("alerts");
  var status = document.getElementById("live-status");
  if (!list || !window.EventSource) { return; }
  var MAX = 5;

  function show(kind, text, css) {
    var li = document.createElement("li");
    li.className = css;
    li.setAttribute("data-kind", kind);
    li.textContent = text;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX) { list.removeChild(list.lastChild); }
  }

  var source = new EventSource("/api/v1/live");
  source.addEventListener("hello", function () { status.textContent = "Live updates: on"; });
  source.addEventListener("alert", function (e) {
    var a = JSON.parse(e.data);
    var label = a.kind === "near_repeat" ? "Near-repeat risk" : "Harm spike";
    show("alert", label + ": " + a.message, a.severity === "urgent" ? "urgent" : "alert");
  });
  source.addEventListener("priority", function (e) {
    var p = JSON.parse(e.data);
    var what = p.change === "entered_top" ? "entered the top 10%" :
      p.change === "left_top" ? "left the top 10%" : "changed priority";
    show("priority", "Cell " + p.cell + " " + what + " (rank " + p.rank + " of " + p.cells_ranked + ")",
      "priority");
    document.dispatchEvent(new CustomEvent("lpt:priority", { detail: p }));
  });
  source.addEventListener("overflow", function () {
    status.textContent = "Live updates: many changes, reload for the full picture";
  });
  source.onerror = function () { status.textContent = "Live updates: reconnecting…"; };
})();
