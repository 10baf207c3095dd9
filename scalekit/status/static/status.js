// The status page's live part: polls status.json every two seconds, replaces the tables with
// the ones the server rendered (one renderer, in Python), and draws the rates with uPlot.
// Without this script the page is the same tables, reloaded by a <noscript> refresh.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var KEEP_POINTS = 150; // five minutes at one point per poll
  var COLOURS = ["#16a34a", "#dc2626", "#9333ea", "#ca8a04"];
  // Built on the first reading with rates, which names the tiers the app has.
  function chartSpecs(tiers) {
    return [
    {id: "chart-requests", series: [["requests/s", "#2563eb"], ["cache hits/s", "#16a34a"]],
     values: function (rates) { return [rates.requests, rates.cache_hits]; }},
    {id: "chart-tiers", series: tiers.map(function (tier, index) {
      return [tier + " hit %", COLOURS[index % COLOURS.length]];
    }), values: function (rates) {
      return tiers.map(function (tier) {
        var ratio = rates.tier_hit_ratio[tier];
        return ratio === undefined || ratio === null ? null : ratio * 100;
      });
    }, range: [0, 100]},
    {id: "chart-saved", series: [["origin s/s", "#ea580c"], ["database s/s", "#0891b2"]],
     values: function (rates) { return [rates.origin_seconds_saved, rates.db_seconds_saved]; }},
    ];
  }
  var state = {charts: [], data: [], updates: 0, error: null};
  window.scalekitStatus = state;

  function width(element) {
    return Math.max(element.clientWidth, 240);
  }

  function makeChart(spec) {
    var element = document.getElementById(spec.id);
    var series = [{}].concat(spec.series.map(function (pair) {
      return {label: pair[0], stroke: pair[1], width: 2, spanGaps: false};
    }));
    var data = [[]].concat(spec.series.map(function () { return []; }));
    var scales = {x: {time: true}};
    if (spec.range) {
      scales.y = {range: spec.range};
    }
    var chart = new uPlot({width: width(element), height: 180, series: series, scales: scales},
                          data, element);
    return {spec: spec, chart: chart, data: data, element: element};
  }

  function addPoint(document_) {
    if (!document_.rates) {
      return;
    }
    if (!state.charts.length) {
      state.charts = chartSpecs(Object.keys(document_.rates.tier_hit_ratio)).map(makeChart);
    }
    state.charts.forEach(function (entry) {
      var values = entry.spec.values(document_.rates);
      entry.data[0].push(document_.taken_at);
      values.forEach(function (value, index) { entry.data[index + 1].push(value); });
      if (entry.data[0].length > KEEP_POINTS) {
        entry.data.forEach(function (column) { column.shift(); });
      }
      entry.chart.setData(entry.data);
    });
  }

  function showError(text) {
    var note = document.getElementById("poll-error");
    if (!note) {
      note = document.createElement("p");
      note.id = "poll-error";
      document.querySelector("header").appendChild(note);
    }
    note.textContent = text;
    note.hidden = !text;
    state.error = text || null;
  }

  function poll() {
    // Resolved against the origin: a page opened as http://user:token@host/ has a base URL
    // with credentials, which fetch() refuses (the browser resends them by itself).
    fetch(new URL("status.json", window.location.origin + window.location.pathname),
          {credentials: "same-origin", cache: "no-store"})
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (document_) {
        document.getElementById("live").innerHTML = document_.html;
        addPoint(document_);
        state.updates += 1;
        document.body.dataset.updates = String(state.updates);
        showError("");
      })
      .catch(function (error) { showError("not updating: " + error.message); })
      .then(function () { window.setTimeout(poll, POLL_MS); });
  }

  function start() {
    document.getElementById("charts").hidden = false;
    window.addEventListener("resize", function () {
      state.charts.forEach(function (entry) {
        entry.chart.setSize({width: width(entry.element), height: 180});
      });
    });
    poll();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
