/* The rule editor: add and remove condition/action rows, show the inputs a field needs, offer only the
   comparisons and fields that fit. Without JavaScript the form still works: every input is shown and
   the server reads the ones the chosen field uses. */
(function () {
  "use strict";
  var form = document.querySelector("[data-rule-form]");
  if (!form) { return; }
  var trigger = form.querySelector("[data-trigger-select]");
  var counter = 100;

  function words(value) { return (value || "").split(" ").filter(Boolean); }

  function fitCondition(row) {
    var select = row.querySelector("[data-field-select]");
    var option = select.options[select.selectedIndex];
    var kind = option ? option.getAttribute("data-kind") : null;
    var ops = words(option && option.getAttribute("data-ops"));
    var field = select.value;
    row.querySelectorAll("[data-kind-input]").forEach(function (input) {
      var fits = kind && words(input.getAttribute("data-kind-input")).indexOf(kind) >= 0;
      var forField = input.getAttribute("data-for-field");
      if (forField && forField !== field) { fits = false; }
      input.hidden = !fits;
    });
    var opSelect = row.querySelector("[data-op-select]");
    var firstFit = null;
    Array.prototype.forEach.call(opSelect.options, function (op) {
      var fits = !kind || ops.indexOf(op.value) >= 0;
      op.hidden = !fits;
      op.disabled = !fits;
      if (fits && firstFit === null) { firstFit = op; }
    });
    if (opSelect.selectedOptions.length && opSelect.selectedOptions[0].disabled && firstFit) {
      firstFit.selected = true;
    }
    opSelect.hidden = !kind;
  }

  function fitAction(row) {
    var select = row.querySelector("[data-kind-select]");
    var option = select.options[select.selectedIndex];
    var params = words(option && option.getAttribute("data-params"));
    row.querySelectorAll("[data-param-input]").forEach(function (input) {
      input.hidden = !words(input.getAttribute("data-param-input")).some(function (p) {
        return params.indexOf(p) >= 0;
      });
    });
  }

  function fitTrigger() {
    var current = trigger.value;
    form.querySelectorAll("[data-field-select] option, [data-kind-select] option").forEach(function (option) {
      var triggers = option.getAttribute("data-triggers");
      if (!triggers) { return; }
      var fits = words(triggers).indexOf(current) >= 0;
      option.disabled = !fits && !option.selected;
    });
  }

  function wire(row) {
    var field = row.querySelector("[data-field-select]");
    if (field) {
      field.addEventListener("change", function () { fitCondition(row); });
      fitCondition(row);
    }
    var kind = row.querySelector("[data-kind-select]");
    if (kind) {
      kind.addEventListener("change", function () { fitAction(row); });
      fitAction(row);
    }
    var remove = row.querySelector("[data-remove-row]");
    if (remove) {
      remove.addEventListener("click", function () { row.remove(); });
    }
  }

  function numberRow(row, n) {
    [row].concat(Array.prototype.slice.call(row.querySelectorAll("*"))).forEach(function (el) {
      Array.prototype.slice.call(el.attributes).forEach(function (attr) {
        if (attr.value.indexOf("__N__") !== -1) {
          el.setAttribute(attr.name, attr.value.split("__N__").join(n));
        }
      });
    });
  }

  form.querySelectorAll("[data-condition-row], [data-action-row]").forEach(wire);
  form.querySelectorAll("[data-add-row]").forEach(function (button) {
    button.addEventListener("click", function () {
      var template = document.querySelector('[data-row-template="' + button.getAttribute("data-add-row") + '"]');
      counter += 1;
      // A clone of the <template>'s row, numbered through its attributes (never through markup).
      var row = template.content.firstElementChild.cloneNode(true);
      numberRow(row, String(counter));
      button.parentNode.insertBefore(row, button);
      wire(row);
      fitTrigger();
      var first = row.querySelector("select");
      if (first) { first.focus(); }
    });
  });
  trigger.addEventListener("change", fitTrigger);
  fitTrigger();
}());
