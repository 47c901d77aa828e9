// The priority map: H3 cells coloured by score over the force and authority boundaries
// (or tiles when configured). Tapping a cell shows its details; the list view has the same.
(function () {
  "use strict";
  var el = document.getElementById("map");
  if (!el) { return; }
  if (!window.L) {
    el.textContent = "The map library is not available here: the list view has the same information.";
    return;
  }
  var level = el.getAttribute("data-level") || "9";
  var tiles = el.getAttribute("data-tiles");
  var detail = document.getElementById("detail");
  var map = L.map(el, { zoomControl: true, attributionControl: true, preferCanvas: false });
  map.setView([53.75, -0.45], 9);
  if (tiles) {
    L.tileLayer(tiles, { maxZoom: 19, attribution: "Map tiles" }).addTo(map);
  }
  var COLOURS = ["#ffffb2", "#fecc5c", "#fd8d3c", "#e31a1c", "#b10026"];
  function colour(score) {
    var i = Math.max(0, Math.min(4, Math.floor((score || 0) * 5)));
    return COLOURS[i];
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); });
  }
  function el2(tag, text) { var n = document.createElement(tag); if (text) { n.textContent = text; } return n; }

  function showDetail(d) {
    detail.textContent = "";
    var art = el2("article"); art.className = "area"; art.id = "cell-detail";
    var h = el2("h3"); var a = el2("a", d.streets.length ? d.streets[0] : "Cell " + d.id);
    a.href = "/officer/cells/" + d.level + "/" + d.id; h.appendChild(a); art.appendChild(h);
    art.appendChild(el2("p", "Rank " + (d.rank || "–") + (d.ranked_of ? " of " + d.ranked_of : "") +
      " · score " + (d.score || 0).toFixed(2) + (d.as_of ? " · as of " + d.as_of.slice(0, 10) : "")));
    function section(title, items, ordered) {
      if (!items || !items.length) { return; }
      art.appendChild(el2("h4", title));
      var list = el2(ordered ? "ol" : "ul");
      items.forEach(function (t) { list.appendChild(el2("li", t)); });
      art.appendChild(list);
    }
    section("Why", d.reasons.map(function (r) { return r.text || r.component; }), true);
    section("What to do", d.actions, false);
    section("Streets", d.streets.slice(0, 5), false);
    if (d.trend && d.trend.length) {
      section("Trend", d.trend.slice(-6).map(function (p) {
        return p.date + ": rank " + (p.rank || "–") + ", score " + (p.score || 0).toFixed(2);
      }), false);
    }
    detail.appendChild(art);
    art.scrollIntoView({ block: "nearest" });
  }

  var cells = L.geoJSON(null, {
    style: function (f) {
      return { color: "#0b0c0c", weight: 1, fillOpacity: 0.6, fillColor: colour(f.properties.score) };
    },
    onEachFeature: function (f, layer) {
      layer.on("click", function () {
        getJSON("/api/v1/priority/" + level + "/" + f.properties.id).then(showDetail)
          .catch(function () { detail.textContent = "Could not load this cell."; });
      });
      layer.bindTooltip("Rank " + f.properties.rank);
    }
  });

  var base = tiles ? Promise.resolve() : getJSON("/officer/boundaries.geojson").then(function (g) {
    L.geoJSON(g, {
      interactive: false,
      style: function (f) {
        var force = f.properties.layer === "force";
        return { color: force ? "#1d70b8" : "#505a5f", weight: force ? 2 : 1.5,
          fillColor: force ? "#f3f2f1" : "#ffffff", fillOpacity: force ? 0.9 : 0.3,
          dashArray: force ? null : "4 3" };
      }
    }).addTo(map);
  });

  base.then(function () { return getJSON("/api/v1/priority/geojson?level=" + level); })
    .then(function (g) {
      cells.addData(g);
      cells.addTo(map);
      var bounds = cells.getBounds();
      if (bounds.isValid()) { map.fitBounds(bounds, { padding: [20, 20], maxZoom: 14 }); }
      el.setAttribute("data-cells", String(g.features.length));
    })
    .catch(function () { el.setAttribute("data-cells", "error"); });

  document.addEventListener("lpt:priority", function (e) {
    var p = e.detail;
    cells.eachLayer(function (layer) {
      if (layer.feature && layer.feature.properties.id === p.cell) {
        layer.feature.properties.score = p.score_after;
        layer.setStyle({ fillColor: colour(p.score_after) });
      }
    });
  });
})();
