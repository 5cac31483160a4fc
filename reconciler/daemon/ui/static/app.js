// reconciler's status page, live: every second, ask for the page's own #live part again with
// the ETag of the last answer. While nothing changes the daemon answers 304 (no body); when
// something does, it sends that part, rendered and escaped on the server, and it replaces the
// old one. Without this script the page is the same, only not live.
"use strict";

(function () {
  const live = document.getElementById("live");
  const indicator = document.getElementById("live-state");
  if (!live || !live.dataset.live) {
    return;
  }
  const source = new URL(live.dataset.live, document.location.href);
  const PERIOD = 1000;
  let etag = live.dataset.etag || null; // what the page holds: the first poll is a 304 too
  let state = "";

  function show(next, words) {
    if (state === next) {
      return;
    }
    state = next;
    indicator.className = next;
    indicator.textContent = words;
  }

  // A swap must not throw the reader's keyboard focus away: refocus the same link.
  function focusedHref() {
    const active = document.activeElement;
    return active && live.contains(active) ? active.getAttribute("href") : null;
  }

  function refocus(href) {
    if (href === null) {
      return;
    }
    for (const link of live.querySelectorAll("a[href]")) {
      if (link.getAttribute("href") === href) {
        link.focus({preventScroll: true});
        return;
      }
    }
  }

  async function poll() {
    try {
      const headers = etag ? {"If-None-Match": etag} : {};
      const answer = await fetch(source, {headers: headers, cache: "no-store"});
      if (answer.status === 200) {
        const text = await answer.text();
        etag = answer.headers.get("ETag");
        const href = focusedHref();
        live.innerHTML = text; // the daemon's own HTML: every value in it escaped there
        refocus(href);
        document.body.dataset.updated = String(Date.now());
      }
      if (answer.ok || answer.status === 304) {
        show("live", "live: follows the daemon");
      } else {
        show("lost", "not live: the daemon answered " + answer.status);
      }
    } catch (error) {
      show("lost", "not live: the daemon does not answer");
    }
    window.setTimeout(poll, PERIOD);
  }

  poll();
})();
