/* The after-sale queue: select after-sales for bulk approval (CSP: no inline scripts). */
(function () {
  "use strict";
  var form = document.querySelector("[data-bulk-form]");
  if (!form) { return; }
  var all = form.querySelector("[data-select-all]");
  var button = form.querySelector("[data-bulk-approve]");
  var count = form.querySelector("[data-selected-count]");
  var items = Array.prototype.slice.call(form.querySelectorAll("[data-bulk-item]"));

  function update() {
    var n = items.filter(function (i) { return i.checked; }).length;
    button.disabled = n === 0;
    count.textContent = n ? "(" + n + ")" : "";
    if (all) { all.checked = n > 0 && n === items.length; all.indeterminate = n > 0 && n < items.length; }
  }
  if (all) {
    all.disabled = items.length === 0;
    all.addEventListener("change", function () {
      items.forEach(function (i) { i.checked = all.checked; });
      update();
    });
  }
  items.forEach(function (i) { i.addEventListener("change", update); });
  var sent = false;
  form.addEventListener("submit", function (event) {
    var text = button.getAttribute("data-confirm");
    if (sent || (text && !window.confirm(text))) { event.preventDefault(); return; }
    sent = true; // one submission; the batch id makes a resubmission harmless anyway
    button.disabled = true;
  });
  update();
})();
