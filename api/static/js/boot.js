// Runs before the first paint (a classic script in <head>, allowed by the CSP as a file):
// 1. applies the saved theme (else the system's), so the page never flashes the wrong one;
// 2. asks for the modules of the page in the address, in parallel with the core modules,
//    so the first render needs no second round of downloads (pages load lazily otherwise).
(function () {
  try {
    var t = localStorage.getItem("assay.theme");
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
  } catch (e) { /* storage disabled */ }
  var chart = ["chart.js", "../vendor/uplot/uPlot.esm.js", "live.js"];
  var needs = {
    overview: ["pages/overview.js"],
    runs: ["pages/runs.js"],
    run: ["pages/run.js", "metrics.js", "graphs.js"].concat(chart),
    agent: ["pages/agent.js"].concat(chart),
    compare: ["pages/compare.js", "metrics.js", "graphs.js"].concat(chart),
    artifacts: ["pages/artifacts.js", "graphs.js"],
  };
  var parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/");
  var page = parts[0] === "runs" ? (parts[1] ? "run" : "runs")
    : parts[0] === "agents" ? (parts[1] ? "agent" : "overview")
    : parts[0] === "compare" ? "compare" : parts[0] === "artifacts" ? "artifacts" : "overview";
  needs[page].forEach(function (m) {
    var l = document.createElement("link");
    l.rel = "modulepreload";
    l.href = "/ui/js/" + m;
    document.head.appendChild(l);
  });
})();
