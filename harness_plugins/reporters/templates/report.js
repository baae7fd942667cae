// The report's behaviour: draw the charts (Vega-Embed, inlined above) and run the item explorer.
// The explorer keeps every item in memory and puts in the page only the rows in view (fixed row
// height over a scroll area), so 10,000 items cost no more to show than 100.  All text from the
// run goes in through textContent, never as HTML.
(function () {
  "use strict";
  var ROW = 28, OVERSCAN = 10;
  var data = JSON.parse(document.getElementById("items-data").textContent);
  var B = 0, ID = 1, OUT = 2, PROMPT = 3, REF = 4, BP = 5, BRAW = 6, BS = 7, CP = 8, CRAW = 9, CS = 10;
  var rows = data.rows, shown = rows, selected = -1;
  var box = document.getElementById("items"), spacer = document.getElementById("items-spacer");
  var fBench = document.getElementById("f-bench"), fOutcome = document.getElementById("f-outcome");
  var fText = document.getElementById("f-text"), count = document.getElementById("item-count");
  var detail = document.getElementById("item-detail");

  function option(select, value, text) {
    var o = document.createElement("option");
    o.value = value; o.textContent = text; select.appendChild(o);
  }
  data.benchmarks.forEach(function (b, i) { option(fBench, String(i), b); });
  data.outcomes.forEach(function (o, i) { option(fOutcome, String(i), o); });

  function score(x) { return x === null ? "-" : (Math.round(x * 1000) / 1000).toString(); }
  function span(text, cls) {
    var s = document.createElement("span");
    s.textContent = text; s.title = text; if (cls) s.className = cls;
    return s;
  }

  function filter() {
    var b = fBench.value, o = fOutcome.value, t = fText.value.trim().toLowerCase();
    var lost = data.outcomes.indexOf("lost"), won = data.outcomes.indexOf("won");
    shown = rows.filter(function (r) {
      if (b !== "" && r[B] !== +b) return false;
      if (o === "changed" ? (r[OUT] !== lost && r[OUT] !== won) : (o !== "" && r[OUT] !== +o)) return false;
      if (t && (r[ID] + "\u0000" + r[PROMPT] + "\u0000" + r[BP] + "\u0000" + r[CP] + "\u0000" + r[REF]).toLowerCase().indexOf(t) < 0) return false;
      return true;
    });
    count.textContent = shown.length + " of " + rows.length + " items";
    spacer.style.height = shown.length * ROW + "px";
    box.scrollTop = 0;
    draw();
  }

  function draw() {
    var first = Math.max(0, Math.floor(box.scrollTop / ROW) - OVERSCAN);
    var last = Math.min(shown.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW) + OVERSCAN);
    var frag = document.createDocumentFragment();
    for (var i = first; i < last; i++) {
      var r = shown[i], div = document.createElement("div");
      var outcome = data.outcomes[r[OUT]];
      div.className = "row" + (r === rows[selected] ? " selected" : "");
      div.style.top = i * ROW + "px";
      div.appendChild(span(data.benchmarks[r[B]]));
      div.appendChild(span(r[ID]));
      div.appendChild(span(outcome, outcome));
      div.appendChild(span(r[REF]));
      div.appendChild(span(r[BP] + " (" + score(r[BS]) + ")"));
      div.appendChild(span(r[CP] + " (" + score(r[CS]) + ")"));
      div.addEventListener("click", show.bind(null, r, div));
      frag.appendChild(div);
    }
    Array.prototype.slice.call(box.querySelectorAll(".row")).forEach(function (n) { n.remove(); });
    box.appendChild(frag);
  }

  function block(title, text) {
    var wrap = document.createElement("div"), h = document.createElement("h3"), pre = document.createElement("pre");
    h.textContent = title; pre.textContent = text === "" ? "(empty)" : text;
    wrap.appendChild(h); wrap.appendChild(pre);
    return wrap;
  }

  function show(r, div) {
    selected = rows.indexOf(r);
    Array.prototype.slice.call(box.querySelectorAll(".row.selected")).forEach(function (n) { n.classList.remove("selected"); });
    div.classList.add("selected");
    detail.textContent = "";
    var title = document.createElement("p");
    title.textContent = data.benchmarks[r[B]] + " / " + r[ID] + ": " + data.outcomes[r[OUT]];
    detail.appendChild(title);
    detail.appendChild(block("prompt", r[PROMPT]));
    var answers = document.createElement("div");
    answers.className = "answers";
    answers.appendChild(block("baseline (score " + score(r[BS]) + ")", r[BRAW] || r[BP]));
    answers.appendChild(block("candidate (score " + score(r[CS]) + ")", r[CRAW] || r[CP]));
    detail.appendChild(answers);
    detail.appendChild(block("reference", r[REF]));
  }

  var pending = false;
  box.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; draw(); });
  });
  [fBench, fOutcome].forEach(function (el) { el.addEventListener("change", filter); });
  fText.addEventListener("input", filter);
  filter();

  var charts = Array.prototype.slice.call(document.querySelectorAll(".chart[data-spec]")).map(function (el) {
    var spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
    return window.vegaEmbed(el, spec, { actions: false, renderer: "svg" });
  });
  Promise.all(charts).then(function () {
    document.documentElement.dataset.ready = "true";
    window.reportReadyMs = performance.now();
  }, function (err) {
    document.documentElement.dataset.ready = "error";
    console.error("chart failed: " + err);
  });
})();
