// Helpers of the dashboard and the resource pages, loaded before each
// page's own script (a classic script: its consts are the pages' globals).
"use strict";
const $ = s => document.querySelector(s);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"})[c]);
const dur = s => s == null ? "–" : s < 60 ? s.toFixed(1) + "s" : s < 3600 ? (s/60).toFixed(1) + "m" : (s/3600).toFixed(1) + "h";

async function api(path, opts) {
  const res = await fetch(path, Object.assign({credentials: "same-origin"}, opts));
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}
