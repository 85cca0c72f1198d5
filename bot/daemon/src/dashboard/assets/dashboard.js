// loop dashboard: the page's one live connection (Server-Sent Events) and its clocks.
// The server sends HTML fragments named after the element they belong to: an element with
// data-live-mode="append" gets new children (a child whose id is already there replaces it),
// any other is replaced whole. Nothing here polls the server.
(function () {
  "use strict";
  var body = document.body;

  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + pad(s) + " s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h " + pad(m % 60) + " min";
    return Math.floor(h / 24) + " days";
  }

  // data-since="ms": time elapsed; data-deadline="ms": time left; data-at="ms": time ago.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = span((now - Number(el.dataset.since)) / 1000);
    });
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = (Number(el.dataset.deadline) - now) / 1000;
      el.textContent = left > 0 ? span(left) + " left" : "expired";
      el.classList.toggle("expired", left <= 0);
    });
    document.querySelectorAll("[data-at]").forEach(function (el) {
      var at = Number(el.dataset.at);
      el.textContent = span((now - at) / 1000) + " ago";
      el.title = new Date(at).toLocaleString();
    });
  }

  function activate(el) {
    if (window.htmx) window.htmx.process(el);
  }

  function swap(target, html) {
    if (target.dataset.liveMode === "append") {
      var holder = document.createElement("template");
      holder.innerHTML = html;
      Array.prototype.slice.call(holder.content.children).forEach(function (child) {
        var old = child.id && document.getElementById(child.id);
        if (old) old.replaceWith(child); else target.appendChild(child);
        activate(child);
      });
      var empty = target.querySelector(":scope > .empty");
      if (empty && target.children.length > 1) empty.remove();
    } else {
      target.innerHTML = html;
      activate(target);
    }
    tick();
  }

  function connect(url) {
    var source = new EventSource(url);
    source.onopen = function () { body.dataset.liveState = "on"; };
    source.onerror = function () {
      // The browser retries by itself unless the server refused (logged out): then it stops.
      body.dataset.liveState = source.readyState === EventSource.CLOSED ? "off" : "connecting";
    };
    source.onmessage = function () {};
    var names = (body.dataset.liveTargets || "").split(" ").filter(Boolean);
    names.forEach(function (name) {
      source.addEventListener(name, function (event) {
        var target = document.getElementById(name);
        if (target) swap(target, event.data);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf && window.htmx) {
      body.addEventListener("htmx:configRequest", function (event) {
        event.detail.headers["X-CSRF-Token"] = csrf.content;
      });
    }
    if (body.dataset.live) connect(body.dataset.live);
    tick();
    setInterval(tick, 1000);
  });
})();
