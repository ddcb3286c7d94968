/* Return addresses: select SKUs for a bulk binding (CSP: no inline scripts). */
(function () {
  "use strict";
  var form = document.querySelector("[data-bind-form]");
  if (!form) { return; }
  var all = form.querySelector("[data-select-all]");
  var button = form.querySelector("[data-bind-submit]");
  var address = form.querySelector("[data-bind-address]");
  var count = form.querySelector("[data-selected-count]");
  var items = Array.prototype.slice.call(form.querySelectorAll("[data-bulk-item]"));
  if (!button) { return; }

  function update() {
    var n = items.filter(function (i) { return i.checked; }).length;
    button.disabled = n === 0 || !address.value;
    count.textContent = n ? "(" + n + ")" : "";
    if (all) { all.checked = n > 0 && n === items.length; all.indeterminate = n > 0 && n < items.length; }
  }
  if (all) {
    all.addEventListener("change", function () {
      items.forEach(function (i) { i.checked = all.checked; });
      update();
    });
  }
  items.forEach(function (i) { i.addEventListener("change", update); });
  address.addEventListener("change", update);
  form.addEventListener("submit", function () { button.disabled = true; });
  update();
})();
