// loghogd viewer: the live tail (Server-Sent Events). Everything else on
// the pages works without this script. Lines are added as text nodes
// (textContent), never as HTML: log bodies are attacker-controlled.
"use strict";
(function () {
  var MAX_LINES = 1000;
  var STAMP = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - /;

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function lineItem(raw) {
    var li = document.createElement("li");
    li.className = "line";
    var ts = "", host = "", body = raw;
    if (STAMP.test(raw)) {
      ts = raw.slice(0, 26);
      var rest = raw.slice(29);
      var i = rest.indexOf(" - ");
      if (i >= 0) { host = rest.slice(0, i); body = rest.slice(i + 3); } else { host = rest; body = ""; }
    }
    var m = /^([A-Z]+) - /.exec(body);
    li.dataset.sev = m ? m[1].toLowerCase() : "";
    li.appendChild(span("ts", ts));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(span("host", host));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(span("body", body));
    return li;
  }

  function start(button, list) {
    var source = new EventSource(button.dataset.src);
    source.addEventListener("open", function () { list.dataset.state = "open"; });
    source.addEventListener("error", function () {
      list.dataset.state = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting";
    });
    source.addEventListener("line", function (e) {
      list.appendChild(lineItem(e.data));
      while (list.children.length > MAX_LINES) { list.removeChild(list.firstChild); }
      list.lastChild.scrollIntoView({ block: "nearest" });
    });
    source.addEventListener("rotated", function () {
      var li = document.createElement("li");
      li.className = "notice";
      li.textContent = "— the live file rotated; following the new one —";
      list.appendChild(li);
    });
    return source;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("tail-toggle");
    var list = document.getElementById("tail");
    if (!button || !list) { return; }
    var source = null;
    button.addEventListener("click", function () {
      if (source) {
        source.close();
        source = null;
        list.dataset.state = "closed";
        button.textContent = "start live tail";
      } else {
        source = start(button, list);
        button.textContent = "stop live tail";
      }
    });
  });
})();
