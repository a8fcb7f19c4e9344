(function () {
  var el = document.getElementById("countdown");
  if (!el) return;
  var left = parseInt(el.getAttribute("data-seconds"), 10);
  function tick() { el.textContent = "(next in " + left + " s)"; if (left > 0) left--; }
  tick();
  setInterval(tick, 1000);
})();
