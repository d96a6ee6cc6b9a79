// alignkit annotate: sign-in, the A/B labeling page and the admin page's sign-out.
// Model output arrives as HTML the server rendered with raw HTML escaped; everything else is set with
// textContent. The Content-Security-Policy allows this file and nothing inline.
"use strict";

const $ = (id) => document.getElementById(id);

function toast(text, kind) {
  const el = $("toast");
  el.textContent = text;
  el.className = "show " + (kind || "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = ""; }, 2600);
}

// JSON request; network failures are retried (a judgment carries a request_id, so a retry after a
// lost response is recorded once). A 401 sends the user back to sign-in.
async function api(path, body, tries = 4) {
  for (let attempt = 1; ; attempt++) {
    let res;
    try {
      res = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (err) {
      if (attempt >= tries) throw new Error("the server cannot be reached; your last answer is not saved yet");
      await new Promise((r) => setTimeout(r, 400 * attempt));
      continue;
    }
    if (res.status === 401 && !path.endsWith("/login")) { location.href = "/"; throw new Error("signed out"); }
    if (res.status >= 500 && attempt < tries) { await new Promise((r) => setTimeout(r, 400 * attempt)); continue; }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : "request failed (" + res.status + ")");
    return data;
  }
}

function requestId() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function bindLogout() {
  const button = $("logout");
  if (button) button.addEventListener("click", async () => { await api("/api/logout", {}); location.href = "/"; });
}

// ------------------------------------------------------------------ sign-in

function initLogin() {
  const form = $("login-form");
  async function signIn(token) {
    try {
      const who = await api("/api/login", { token: token.trim() }, 2);
      location.href = who.next;
    } catch (err) {
      $("login-error").textContent = err.message;
      $("login-error").hidden = false;
    }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
  // links printed by `alignkit annotate serve` carry the token in the fragment (never sent to a server)
  const match = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (match) {
    history.replaceState(null, "", location.pathname);
    signIn(match[1]);
  }
}

// ------------------------------------------------------------------ labeling

const page = { task: null, shownAt: 0, visibleMs: 0, busy: false };

function visibleElapsed() {
  return Math.round(page.visibleMs + (document.hidden ? 0 : performance.now() - page.shownAt));
}

function fillConversation(el, messages) {
  el.replaceChildren();
  for (const m of messages) {
    const box = document.createElement("div");
    box.className = "msg " + m.role;
    const role = document.createElement("div");
    role.className = "role";
    role.textContent = m.role;
    const body = document.createElement("div");
    body.className = "body";
    body.innerHTML = m.html; // rendered server-side from markdown with raw HTML escaped
    box.append(role, body);
    el.append(box);
  }
}

function setConfidence(value) {
  for (const radio of document.querySelectorAll("input[name=confidence]")) radio.checked = radio.value === String(value);
}

function render(state) {
  const p = state.progress;
  $("progress-bar").max = Math.max(1, p.judged + p.available);
  $("progress-bar").value = p.judged;
  $("progress-text").textContent = p.judged + " judged · " + p.available + " left for you · "
    + p.complete + "/" + p.items + " items complete";
  page.task = state.task;
  $("work").hidden = !state.task;
  $("done").hidden = !!state.task;
  if (!state.task) return;
  fillConversation($("prompt"), state.task.prompt);
  fillConversation($("resp-A"), state.task.a);
  fillConversation($("resp-B"), state.task.b);
  const prev = state.task.previous;
  $("reason").value = prev ? prev.reason : "";
  setConfidence(prev ? prev.confidence : null);
  for (const b of document.querySelectorAll(".choice")) b.classList.toggle("previous", !!prev && b.dataset.choice === prev.choice);
  page.shownAt = performance.now();
  page.visibleMs = 0;
  window.scrollTo(0, 0);
}

async function act(fn) {
  if (page.busy) return;
  page.busy = true;
  document.body.classList.add("busy");
  try {
    await fn();
  } catch (err) {
    toast(err.message, "error");
  } finally {
    page.busy = false;
    document.body.classList.remove("busy");
  }
}

function judge(choice) {
  if (!page.task) return;
  const checked = document.querySelector("input[name=confidence]:checked");
  const body = {
    assignment_id: page.task.assignment_id, choice: choice, reason: $("reason").value,
    confidence: checked ? Number(checked.value) : null, time_ms: visibleElapsed(), request_id: requestId(),
  };
  act(async () => {
    $("choose-" + choice).classList.add("picked");
    try {
      render(await api("/api/judge", body));
      toast("saved: " + choice.replace("_", " "));
    } finally {
      $("choose-" + choice).classList.remove("picked");
    }
  });
}

function skip() {
  if (!page.task) return;
  act(async () => { render(await api("/api/skip", { assignment_id: page.task.assignment_id })); toast("skipped"); });
}

function undo() {
  act(async () => { render(await api("/api/undo", {})); toast("undone: the previous item is back"); });
}

const KEYS = { a: () => judge("A"), b: () => judge("B"), t: () => judge("tie"), x: () => judge("both_bad"),
  s: skip, u: undo, "1": () => setConfidence(1), "2": () => setConfidence(2), "3": () => setConfidence(3),
  r: () => $("reason").focus(), "?": () => { $("help").hidden = !$("help").hidden; } };

function onKey(e) {
  if (e.target.matches("textarea, input[type=text], input[type=password]")) {
    if (e.key === "Escape") e.target.blur();
    return; // typing a reason never triggers a shortcut
  }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const handler = KEYS[e.key.length === 1 ? e.key.toLowerCase() : e.key] || (e.key === "Escape" ? () => { $("help").hidden = true; } : null);
  if (handler) { e.preventDefault(); handler(); }
}

function initLabel() {
  for (const b of document.querySelectorAll(".choice")) b.addEventListener("click", () => judge(b.dataset.choice));
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("undo-done").addEventListener("click", undo);
  $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  document.addEventListener("keydown", onKey);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) page.visibleMs += performance.now() - page.shownAt; // time away is not labeling time
    else page.shownAt = performance.now();
  });
  act(async () => render(await api("/api/task")));
}

// ------------------------------------------------------------------ entry

bindLogout();
({ login: initLogin, label: initLabel })[document.body.dataset.page]?.();
