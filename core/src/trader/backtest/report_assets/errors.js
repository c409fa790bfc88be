/* trader backtest report: record any script error or blocked load in the page, visibly, and in
   the body's data-error attribute (the report's tests read it). Runs before everything else. */
(function () {
  "use strict";
  function record(message) {
    var body = document.body;
    var before = body.getAttribute("data-error");
    var text = before ? before + "; " + message : message;
    body.setAttribute("data-error", text);
    var box = document.getElementById("report-error");
    if (box) {
      box.hidden = false;
      box.textContent = "The charts could not be drawn: " + text;
    }
  }
  window.traderReportError = record;
  window.addEventListener("error", function (event) {
    record(String(event.message || "script error") +
      (event.lineno ? " (line " + event.lineno + ")" : ""));
  });
  document.addEventListener("securitypolicyviolation", function (event) {
    record("blocked by the report's content security policy: " + event.violatedDirective);
  });
})();
