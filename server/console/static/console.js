// The console's behaviour: the CSRF header on htmx requests, confirmations, the dashboard and report charts.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRFToken"] = csrfToken();
  });

  // A form re-rendered with its error (409, 422) replaces the old one in place, like a success does.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 409 || status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  var COLORS = ["#07c160", "#1664ff", "#ff7d00", "#722ed1", "#d93026"];

  function yuan(fen) { return (fen / 100).toFixed(2); }

  function countsOption(data) {
    var series = [["new_members", "新会员"], ["bindings", "绑定"], ["leads", "线索"], ["orders", "订单"]];
    return {
      color: COLORS,
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 40, right: 16, top: 36, bottom: 28 },
      xAxis: { type: "category", data: data.dates.map(function (d) { return d.slice(5); }) },
      yAxis: { type: "value", minInterval: 1 },
      series: series.map(function (s) { return { name: s[1], type: "line", data: data[s[0]] }; })
    };
  }

  function moneyOption(data) {
    return {
      color: COLORS,
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 56, right: 56, top: 36, bottom: 28 },
      xAxis: { type: "category", data: data.dates.map(function (d) { return d.slice(5); }) },
      yAxis: [{ type: "value", name: "元" }, { type: "value", name: "积分" }],
      series: [
        { name: "支付金额（元）", type: "bar", data: data.paid_fen.map(yuan) },
        { name: "发放积分", type: "line", yAxisIndex: 1, data: data.points_issued.map(yuan) }
      ]
    };
  }

  // A report page's chart, from the description the page carries: categories, series of numbers, axis names.
  function reportOption(spec) {
    var category = { type: "category", data: spec.categories, axisLabel: { interval: 0, hideOverlap: true } };
    var values = spec.axes.map(function (name) { return { type: "value", name: name }; });
    return {
      color: COLORS,
      tooltip: { trigger: "axis" },
      legend: { top: 0, type: "scroll" },
      grid: { left: spec.horizontal ? 120 : 56, right: 56, top: 40, bottom: 36, containLabel: !spec.horizontal },
      xAxis: spec.horizontal ? values[0] : category,
      yAxis: spec.horizontal ? category : values,
      series: spec.series.map(function (s) {
        return { name: s.name, type: s.type, data: s.data, stack: s.stack, yAxisIndex: spec.horizontal ? 0 : (s.axis || 0), connectNulls: true, barMaxWidth: 36 };
      })
    };
  }

  var OPTIONS = { counts: countsOption, money: moneyOption, report: reportOption };

  function draw(node, data) {
    var chart = window.echarts.init(node, null, { renderer: "canvas" });
    chart.setOption(OPTIONS[node.getAttribute("data-chart")](data));
    node.setAttribute("data-rendered", "true");
    window.addEventListener("resize", function () { chart.resize(); });
  }

  function drawCharts() {
    var nodes = document.querySelectorAll("[data-chart]");
    if (!nodes.length || !window.echarts) { return; }
    var cache = {};
    nodes.forEach(function (node) {
      var spec = node.getAttribute("data-chart-spec");
      if (spec) {
        try { draw(node, JSON.parse(spec)); } catch (error) {
          node.textContent = "图表加载失败，请刷新页面重试。";
          node.setAttribute("data-rendered", "error");
          console.warn(error);
        }
        return;
      }
      var src = node.getAttribute("data-src");
      cache[src] = cache[src] || fetch(src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("trend data: HTTP " + response.status); }
          return response.json();
        });
      cache[src].then(function (data) { draw(node, data); }).catch(function (error) {
        node.textContent = "图表加载失败，请刷新页面重试。";
        node.setAttribute("data-rendered", "error");
        console.warn(error);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawCharts);
  } else {
    drawCharts();
  }
})();
