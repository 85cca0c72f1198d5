// loop dashboard: the terminal page. xterm.js draws the shell; one WebSocket carries its bytes
// (binary frames both ways) and small JSON messages (text frames): {"type":"resize"} from
// here; "attached", "exited" and "error" from the daemon. A dropped socket reconnects by
// itself and the daemon re-attaches it to the same shell, replaying its recent output.
(function () {
  "use strict";

  // xterm.js adds <style> elements of its own. The page's policy allows <style> only with
  // this response's nonce, which this script was given: stamp it on every <style> created
  // from now on (before it is inserted, which is when the browser checks it).
  var script = document.currentScript;
  var nonce = script && script.nonce;
  if (nonce) {
    var create = Document.prototype.createElement;
    Document.prototype.createElement = function (name, options) {
      var el = create.call(this, name, options);
      if (String(name).toLowerCase() === "style") el.setAttribute("nonce", nonce);
      return el;
    };
  }

  function start() {
    var screen = document.getElementById("terminal");
    var status = document.getElementById("terminal-status");
    if (!screen || !window.Terminal || !window.FitAddon) return;
    var term = new window.Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
      fontSize: 14,
      theme: window.matchMedia("(prefers-color-scheme: dark)").matches
        ? { background: "#0f1115", foreground: "#e6e8eb" }
        : { background: "#ffffff", foreground: "#1d1f23", cursor: "#1d1f23", selectionBackground: "#c8d7f5" },
    });
    var fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    fit.fit();

    var encoder = new TextEncoder();
    var socket = null;
    var retries = 0;
    var ended = false;
    // Why the server gave up on the last socket, kept visible while the page retries.
    var refusal = "";

    function say(text) { status.textContent = text; }
    function open() { return socket && socket.readyState === WebSocket.OPEN; }

    function address() {
      var url = new URL(screen.dataset.socket, window.location.href);
      url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
      url.searchParams.set("cols", term.cols);
      url.searchParams.set("rows", term.rows);
      return url.toString();
    }

    function connect() {
      ended = false;
      socket = new WebSocket(address());
      socket.binaryType = "arraybuffer";
      socket.onmessage = function (event) {
        if (typeof event.data !== "string") {
          term.write(new Uint8Array(event.data));
          return;
        }
        var message = JSON.parse(event.data);
        if (message.type === "attached") {
          retries = 0;
          refusal = "";
          // A re-attached shell sends its recent output again: start from a clean screen.
          if (message.reattached) term.reset();
          say((message.reattached ? "re-attached to " : "connected to ") +
            (message.host === "warm_agent" ? "the thread's agent" : "a shell container") +
            " (" + message.container + ")");
          term.focus();
        } else if (message.type === "exited") {
          ended = true;
          say("The shell ended. Press Enter for a new one.");
        } else if (message.type === "error") {
          refusal = message.message;
          say(refusal);
        }
      };
      socket.onclose = function () {
        if (ended) return;
        var wait = Math.min(10000, 500 * Math.pow(2, retries++));
        say((refusal || "disconnected") + "; reconnecting in " + Math.round(wait / 1000) + " s…");
        window.setTimeout(connect, wait);
      };
    }

    term.onData(function (data) {
      if (ended) {
        if (data === "\r") { term.reset(); connect(); }
        return;
      }
      if (open()) socket.send(encoder.encode(data));
    });
    term.onResize(function (size) {
      if (open()) socket.send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows }));
    });
    window.addEventListener("resize", function () { fit.fit(); });
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
