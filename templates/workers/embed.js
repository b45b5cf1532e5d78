/* CCGSC embed script: shows a small consent frame from the CCGSC platform. Nothing runs
   in this page; the frame asks the visitor first and runs work in its own Web Workers. */
(function () {
  "use strict";
  // currentScript is null in a few loaders (some tag managers): find the tag by its attribute.
  var script = document.currentScript || document.querySelector("script[data-site][src*='/embed.js']");
  if (!script || window.__ccgscEmbed) return;
  window.__ccgscEmbed = true;
  var key = script.getAttribute("data-site") || "";
  var WARN_AFTER_MS = 8000;
  var base = new URL("{{ platform|escapejs }}" || script.src, location.href).origin;
  var frame = document.createElement("iframe");
  // GPU work only where the site owner asked for it (data-gpu="on"); visitors still consent first.
  var gpu = (script.getAttribute("data-gpu") || "").toLowerCase() === "on";
  frame.src = base + "/embed/frame/?site=" + encodeURIComponent(key) + (gpu ? "&gpu=on" : "");
  frame.title = "Volunteer computing (CCGSC)";
  // The frame keeps the platform's origin (its own storage and connection) but may not
  // navigate this page, open dialogs or submit forms.
  frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-popups allow-popups-to-escape-sandbox");
  frame.setAttribute("referrerpolicy", "origin");
  frame.setAttribute("data-ccgsc", "frame");
  // Invisible until the frame says how big it is: a refused frame never shows.
  frame.style.cssText =
    "position:fixed;right:12px;bottom:12px;width:0;height:0;max-width:calc(100vw - 24px);" +
    "border:0;z-index:2147483000;background:transparent;color-scheme:normal;";
  var heard = false;
  window.addEventListener("message", function (event) {
    if (event.origin !== base || event.source !== frame.contentWindow) return;
    var data = event.data || {};
    if (data.ccgsc === "size") {
      heard = true;
      // The frame is exactly as big as its card, so clicks beside it reach this page.
      var width = Math.max(0, Math.min(Number(data.width) || 0, 480));
      var height = Math.max(0, Math.min(Number(data.height) || 0, 480));
      frame.style.width = width + "px";
      frame.style.height = height + "px";
      // Dismissed for good: nothing of the frame stays in this page's way.
      frame.style.display = width && height ? "block" : "none";
    }
  });
  function insert() {
    document.body.appendChild(frame);
    // A refused frame stays invisible to visitors; say why to whoever set the tag up.
    setTimeout(function () {
      if (!heard && window.console) {
        console.warn(
          "CCGSC embed: the consent frame did not load. Check that data-site holds this " +
            "site's key and that " + location.origin + " is the origin registered for it " +
            "on the organization's Embed sites page at " + base + "."
        );
      }
    }, WARN_AFTER_MS);
  }
  if (document.body) insert();
  else document.addEventListener("DOMContentLoaded", insert);
})();
