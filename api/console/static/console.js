// certctl-notify console: auto-refresh of the live region, row actions and bulk requeue through the
// API's own endpoints. No framework and no inline script (the page's CSP forbids it); every piece of
// alert text arrives already escaped in server-rendered HTML or is set with textContent.
"use strict";

(function () {
  const REFRESH_MS = 5000;       // auto-refresh period
  const FOLLOW_MS = 1500;        // refresh period while a row the operator acted on is still settling
  const FOLLOW_LIMIT_MS = 60000; // stop following after this long
  const POLL_JOB_MS = 500;       // bulk requeue progress poll
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const kept = new Set();        // rows acted on: kept in view after they leave the tab
  let followUntil = 0;
  let refreshing = false;

  function say(text, isError) {
    const toast = document.getElementById("toast");
    toast.textContent = text;
    toast.classList.toggle("error", Boolean(isError));
    toast.classList.add("shown");
    clearTimeout(say.timer);
    say.timer = setTimeout(() => toast.classList.remove("shown"), 6000);
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      const error = new Error(data.message || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  async function fragment(url) {
    const response = await fetch(url, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin" });
    if (response.status === 401) throw new Error("Your console session has ended: reload the page to sign in.");
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return response.text();
  }

  async function loadSources(root) {
    for (const box of root.querySelectorAll("[data-src]")) {
      try {
        box.innerHTML = await fragment(box.dataset.src);
        box.removeAttribute("aria-busy");
      } catch (error) {
        box.textContent = `Could not load: ${error.message}`;
      }
    }
  }

  function liveUrl() {
    const url = new URL(window.location.href);
    if (kept.size) url.searchParams.set("keep", Array.from(kept).join(","));
    return url.toString();
  }

  // Swap the live region for a fresh render of the same URL, keeping focus and scroll where they were.
  async function refresh() {
    const live = document.getElementById("live");
    if (!live || refreshing || document.querySelector("dialog[open]")) return;
    refreshing = true;
    try {
      const focused = document.activeElement;
      const focusKey = focused && live.contains(focused) ? keyOf(focused) : null;
      const html = live.dataset.src ? await fragment(live.dataset.src) : await fragment(liveUrl());
      const results = saveResults(live);
      const sources = new Map(Array.from(live.querySelectorAll("[data-src]"), (box) => [box.dataset.src, box.innerHTML]));
      live.innerHTML = html;
      restoreResults(live, results);
      for (const box of live.querySelectorAll("[data-src]")) {
        if (sources.has(box.dataset.src)) box.innerHTML = sources.get(box.dataset.src);
      }
      if (!unsettled(live)) followUntil = 0;
      if (focusKey) {
        const again = live.querySelector(focusKey);
        if (again) again.focus({ preventScroll: true });
      }
      await loadSources(live);
    } catch (error) {
      say(error.message, true);
    } finally {
      refreshing = false;
    }
  }

  // Whether a row the operator acted on is still on its way (pending, or failed and waiting to retry).
  function unsettled(live) {
    return Array.from(kept).some((id) => {
      const row = live.querySelector(`[data-id="${CSS.escape(id)}"][data-status]`);
      return row && (row.dataset.status === "pending" || row.dataset.status === "failed");
    });
  }

  function keyOf(element) {
    if (element.id) return `#${CSS.escape(element.id)}`;
    if (element.dataset.action) return `[data-action="${element.dataset.action}"][data-id="${CSS.escape(element.dataset.id)}"]`;
    if (element.dataset.tab) return `[data-tab="${element.dataset.tab}"]`;
    const href = element.getAttribute("href");
    return href ? `a[href="${CSS.escape(href)}"]` : null;
  }

  function saveResults(live) {
    const saved = new Map();
    for (const span of live.querySelectorAll("[data-result-for]")) {
      if (span.textContent) saved.set(span.dataset.resultFor, [span.textContent, span.className]);
    }
    return saved;
  }

  function restoreResults(live, saved) {
    for (const span of live.querySelectorAll("[data-result-for]")) {
      const found = saved.get(span.dataset.resultFor);
      if (found) [span.textContent, span.className] = found;
    }
  }

  function resultFor(id) {
    return document.querySelector(`[data-result-for="${CSS.escape(id)}"]`);
  }

  // Requeue / Mark read on one row (or the detail page), then follow the row until it settles.
  async function act(button) {
    const id = button.dataset.id;
    const action = button.dataset.action;
    const path = `/api/v1/notifications/${encodeURIComponent(id)}/${action === "read" ? "read" : "requeue"}`;
    const label = action === "read" ? "Marked read" : "Requeued";
    button.disabled = true;
    try {
      await api("POST", path);
      const span = resultFor(id);
      if (span) { span.textContent = label; span.className = "result ok"; }
      say(`${label}: ${id}`);
      kept.add(id);
      followUntil = Date.now() + FOLLOW_LIMIT_MS;
      setTimeout(refresh, 300);
    } catch (error) {
      const span = resultFor(id);
      const text = `Refused (${error.status || "network"}): ${error.message}`;
      if (span) { span.textContent = text; span.className = "result error"; }
      say(text, true);
      button.disabled = false;
    }
  }

  // Bulk requeue of the view's dead rows: dry-run count, confirm, progress, cancel.
  function bulk(opener) {
    const dialog = document.getElementById("bulk-dialog");
    const question = document.getElementById("bulk-question");
    const status = document.getElementById("bulk-status");
    const progress = document.getElementById("bulk-progress");
    const confirm = document.getElementById("bulk-confirm");
    const cancel = document.getElementById("bulk-cancel");
    const close = document.getElementById("bulk-close");
    const filter = JSON.parse(opener.dataset.filter);
    const noun = opener.dataset.noun;
    let job = null;
    let timer = null;
    let pollSeq = 0; // a poll answered after a newer one started (e.g. across Cancel) is dropped

    question.textContent = "Counting…";
    status.textContent = "";
    progress.hidden = true;
    confirm.hidden = false;
    confirm.disabled = true;
    cancel.hidden = true;
    dialog.showModal();

    api("POST", "/api/v1/notifications/requeue", { ...filter, dry_run: true }).then((data) => {
      if (!data.matched) {
        question.textContent = `No ${noun} to requeue.`;
        confirm.hidden = true;
        return;
      }
      question.textContent = `Requeue ${data.matched.toLocaleString("en-US")} ${noun}?`;
      confirm.disabled = false;
      confirm.focus();
    }).catch((error) => { question.textContent = `Refused: ${error.message}`; confirm.hidden = true; });

    confirm.onclick = async () => {
      confirm.disabled = true;
      try {
        job = await api("POST", "/api/v1/notifications/requeue", filter);
      } catch (error) {
        status.textContent = `Refused (${error.status || "network"}): ${error.message}`;
        return;
      }
      confirm.hidden = true;
      cancel.hidden = false;
      cancel.disabled = false;
      progress.hidden = false;
      progress.max = Math.max(job.matched, 1);
      progress.value = 0;
      cancel.focus();
      poll();
    };

    async function poll() {
      const seq = ++pollSeq;
      try {
        const state = await api("GET", `/api/v1/requeue-jobs/${encodeURIComponent(job.job_id)}`);
        if (seq !== pollSeq) return;
        progress.value = state.requeued + state.skipped;
        const counts = `${state.requeued.toLocaleString("en-US")} of ${state.matched.toLocaleString("en-US")} requeued` +
          (state.skipped ? `, ${state.skipped.toLocaleString("en-US")} skipped (changed meanwhile)` : "");
        if (state.status === "running") {
          status.textContent = `Running: ${counts}.`;
          timer = setTimeout(poll, POLL_JOB_MS);
          return;
        }
        status.textContent = `${state.status === "cancelled" ? "Cancelled" : "Done"}: ${counts}.`;
        status.dataset.requeued = String(state.requeued);
        status.dataset.jobStatus = state.status;
        cancel.hidden = true;
        close.focus();
      } catch (error) {
        if (seq !== pollSeq) return;
        status.textContent = `Could not read the job's progress: ${error.message}`;
        timer = setTimeout(poll, POLL_JOB_MS * 4);
      }
    }

    cancel.onclick = async () => {
      cancel.disabled = true;
      clearTimeout(timer);
      pollSeq++;
      try {
        await api("POST", `/api/v1/requeue-jobs/${encodeURIComponent(job.job_id)}/cancel`);
      } catch (error) {
        status.textContent = `Cancel refused (${error.status}): ${error.message}`;
      }
      clearTimeout(timer);
      poll();
    };

    close.onclick = () => dialog.close();
    dialog.onclose = () => { clearTimeout(timer); refresh(); };
  }

  function setUpAutoRefresh() {
    const toggle = document.getElementById("auto-refresh");
    if (!toggle) return;
    toggle.checked = localStorage.getItem("certctl-auto-refresh") !== "off";
    toggle.addEventListener("change", () => {
      localStorage.setItem("certctl-auto-refresh", toggle.checked ? "on" : "off");
      if (toggle.checked) refresh();
    });
    let last = Date.now();
    setInterval(() => {
      if (document.hidden) return;
      const following = Date.now() < followUntil;
      const due = Date.now() - last >= (following ? FOLLOW_MS : REFRESH_MS);
      if (due && (toggle.checked || following)) {
        last = Date.now();
        refresh();
      }
    }, 250);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) { act(button); return; }
    const opener = event.target.closest("#bulk-open");
    if (opener) bulk(opener);
  });

  document.addEventListener("DOMContentLoaded", () => {
    loadSources(document);
    setUpAutoRefresh();
  });
})();
