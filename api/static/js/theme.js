// Applied before the first paint (a classic script in <head>): the saved theme, else the system's.
(function () {
  try {
    var t = localStorage.getItem("assay.theme");
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
  } catch (e) { /* storage disabled */ }
})();
