// Small form helpers shared by several pages (no inline handlers: the CSP forbids them).
//  - <select class="autosubmit"> submits its form when changed.
//  - <button data-copy="ID"> copies the text of element #ID to the clipboard.
(function () {
  "use strict";

  document.addEventListener("change", function (evt) {
    const el = evt.target;
    if (el.matches && el.matches("select.autosubmit") && el.form) el.form.submit();
  });

  document.addEventListener("click", function (evt) {
    const button = evt.target.closest && evt.target.closest("button[data-copy]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    const done = function () {
      const before = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = before; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source); // plain http: select it so Ctrl+C works
      try { if (document.execCommand("copy")) done(); } catch (e) { /* leave it selected */ }
    }
  });

  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
})();
