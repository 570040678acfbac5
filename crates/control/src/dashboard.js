"use strict";
(function () {
  var tokenInput = document.getElementById("token");
  var fromHash = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (fromHash) {
    sessionStorage.setItem("crieur-token", decodeURIComponent(fromHash[1]));
    history.replaceState(null, "", location.pathname);
  }
  tokenInput.value = sessionStorage.getItem("crieur-token") || "";
  tokenInput.addEventListener("change", function () {
    sessionStorage.setItem("crieur-token", tokenInput.value.trim());
  });
  function headers() {
    var t = tokenInput.value.trim();
    return t ? { "Authorization": "Bearer " + t } : {};
  }
  var views = {};
  var errorBox = document.getElementById("error");
  function text(el, v) { el.textContent = (v === null || v === undefined) ? "–" : String(v); }
  function time(s) { return s ? new Date(s).toLocaleString() : null; }
  function view(id) {
    if (views[id]) { return views[id]; }
    var node = document.getElementById("campaign-template").content.firstElementChild.cloneNode(true);
    node.id = "campaign-" + id;
    node.dataset.campaign = id;
    document.getElementById("campaigns").appendChild(node);
    var v = { node: node, cursor: null };
    node.querySelector(".pause").addEventListener("click", function () { order(id, "pause"); });
    node.querySelector(".resume").addEventListener("click", function () { order(id, "resume"); });
    views[id] = v;
    return v;
  }
  function order(id, what) {
    fetch("/api/campaigns/" + encodeURIComponent(id) + "/" + what, { method: "POST", headers: headers() })
      .then(function (r) {
        if (!r.ok) { return r.json().then(function (b) { throw new Error(what + ": " + b.error); }); }
        errorBox.textContent = "";
        refresh();
      })
      .catch(function (e) { errorBox.textContent = e.message; });
  }
  function show(c) {
    var v = view(c.id), n = v.node;
    function q(sel) { return n.querySelector(sel); }
    text(q(".name"), c.name);
    text(q(".id"), c.id);
    var state = !c.running ? "ended" : c.stopping ? "stopping" : c.paused ? "paused" : "running";
    var st = q(".state");
    text(st, state);
    st.className = "state state-" + state;
    text(q(".dialled"), c.dialled);
    text(q(".in-progress"), c.in_progress);
    text(q(".per-minute"), Math.round(c.calls_per_second * 60));
    text(q(".answered"), c.answered);
    text(q(".opted-out"), c.opted_out);
    text(q(".failed"), c.failed);
    text(q(".remaining"), c.remaining);
    text(q(".due-now"), c.due_now);
    text(q(".next-due"), time(c.next_due));
    text(q(".breaker"), c.breaker);
    text(q(".never-callable"), c.never_callable);
    text(q(".estimated-end"), time(c.estimated_end));
    var body = q(".outcomes tbody");
    body.textContent = "";
    Object.keys(c.by_outcome).forEach(function (o) {
      var tr = document.createElement("tr");
      [o, c.by_outcome[o]].forEach(function (x) {
        var td = document.createElement("td"); td.textContent = x; tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    calls(c.id, v);
  }
  function calls(id, v) {
    var url = "/api/campaigns/" + encodeURIComponent(id) + "/calls?limit=50" +
      (v.cursor === null ? "" : "&since=" + v.cursor);
    fetch(url, { headers: headers() }).then(function (r) { return r.json(); }).then(function (p) {
      v.cursor = p.next;
      var body = v.node.querySelector(".calls tbody");
      p.calls.forEach(function (c) {
        var tr = document.createElement("tr");
        [c.seq, time(c.at), c.type, c.contact, c.number, c.outcome || ""].forEach(function (x) {
          var td = document.createElement("td"); td.textContent = x; tr.appendChild(td);
        });
        body.insertBefore(tr, body.firstChild);
      });
      while (body.children.length > 200) { body.removeChild(body.lastChild); }
    }).catch(function () {});
  }
  function refresh() {
    fetch("/api/campaigns", { headers: headers() })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status + (r.status === 401 ? ": enter the API token" : "")); }
        return r.json();
      })
      .then(function (b) { b.campaigns.forEach(show); document.body.dataset.loaded = "yes"; })
      .catch(function (e) { errorBox.textContent = e.message; });
  }
  refresh();
  setInterval(refresh, 1000);
})();
