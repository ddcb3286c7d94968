/* SLA history charts: the rate per day per shop (Chart.js, vendored in static/vendor), conversations
   handled per agent per day, and the hour-of-day heatmap (a table coloured through the CSSOM: the CSP
   forbids inline style attributes, not styles set from a script file). */
(function () {
  "use strict";
  var root = document.getElementById("sla-history");
  if (!root) { return; }
  var report, S;
  try { report = JSON.parse(root.getAttribute("data-report")); S = JSON.parse(root.getAttribute("data-strings")); } catch (e) { return; }
  function t(key, vars) {
    var value = S[key];
    if (typeof value !== "string") { return key; }
    return value.replace(/%\((\w+)\)s/g, function (w, name) { return vars && vars[name] != null ? String(vars[name]) : ""; });
  }
  var palette = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#b45309"];
  window.channeldesk = window.channeldesk || {};
  var charts = window.channeldesk.slaCharts = [];

  var daily = document.querySelector('[data-chart="daily"]');
  if (daily && window.Chart) {
    charts.push(new window.Chart(daily, {
      type: "line",
      data: {
        labels: report.days,
        datasets: report.shops.map(function (shop, i) {
          return {
            label: shop.shop_name,
            data: shop.daily.map(function (v) { return v == null ? null : Math.round(v * 1000) / 10; }),
            borderColor: palette[i % palette.length],
            backgroundColor: palette[i % palette.length],
            spanGaps: true,
            tension: 0.2
          };
        })
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { y: { min: 0, max: 100, title: { display: true, text: t("rate") + " %" } } }
      }
    }));
  }

  var agents = document.querySelector('[data-chart="agents"]');
  if (agents && window.Chart && report.agents.length) {
    var named = report.agents.filter(function (a) { return a.agent_id; });
    charts.push(new window.Chart(agents, {
      type: "bar",
      data: {
        labels: report.days,
        datasets: named.map(function (a, i) {
          return { label: a.agent_name, data: a.handled_per_day, backgroundColor: palette[i % palette.length] };
        })
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: t("handled") } } }
      }
    }));
  }

  var heat = document.querySelector("[data-heatmap] tbody");
  if (heat) {
    var max = 0;
    report.heatmap.forEach(function (row) { row.forEach(function (cell) { max = Math.max(max, cell.turns); }); });
    report.heatmap.forEach(function (row, weekday) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.textContent = S.weekdays[weekday];
      tr.appendChild(th);
      row.forEach(function (cell, hour) {
        var td = document.createElement("td");
        td.textContent = cell.turns ? String(cell.turns) : "";
        var share = max ? cell.turns / max : 0;
        td.style.backgroundColor = "rgba(37, 99, 235, " + (0.08 + 0.8 * share).toFixed(2) + ")";
        if (share > 0.55) { td.style.color = "#fff"; }
        td.title = t("heat_cell", {
          day: S.weekdays[weekday], hour: hour, turns: cell.turns,
          rate: cell.rate == null ? t("none") : (cell.rate * 100).toFixed(1) + "%"
        });
        td.setAttribute("data-hour", String(hour));
        tr.appendChild(td);
      });
      heat.appendChild(tr);
    });
  }
})();
