// clipcrawl browse: one page, no dependencies. State lives in the URL (?q=...&kept=...), so a
// result list can be bookmarked and the page can be opened on a query.
"use strict";
const $ = (id) => document.getElementById(id);
const FIELDS = ["q", "kept", "status", "domain", "lang", "min", "max", "min_aesthetic", "max_text_area",
                "max_caption_ocr_overlap", "max_nsfw_score", "k"];
let offset = 0;
let like = "";

function params() {
  const p = new URLSearchParams();
  for (const f of FIELDS) { const v = $(f).value.trim(); if (v !== "") p.set(f, v); }
  if (like) p.set("like", like);
  return p;
}

function fill(select, pairs) {
  for (const [value, count] of pairs) {
    const o = document.createElement("option");
    o.value = value; o.textContent = `${value} (${count})`;
    select.appendChild(o);
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function fmt(x) { return (x === null || x === undefined) ? "–" : Number(x).toFixed(3); }

function card(r) {
  const c = el("div", "card");
  c.dataset.key = r.key;
  const thumb = el("div", "thumb");
  if (r.status === "success") {
    const img = el("img");
    img.loading = "lazy"; img.alt = r.caption || r.key;
    img.src = `/image/${encodeURIComponent(r.key)}`;
    img.addEventListener("error", () => { thumb.textContent = "no image"; });
    thumb.appendChild(img);
  } else {
    thumb.textContent = "no image (dropped)";
  }
  c.appendChild(thumb);
  const body = el("div", "body");
  body.appendChild(el("div", "caption", r.caption || "(no caption)"));
  const sim = (r.similarity !== undefined) ? `similarity ${fmt(r.similarity)} · ` : "";
  body.appendChild(el("div", "scores", `${sim}clip ${fmt(r.clip_similarity)}`));
  const st = el("div", "status " + (r.status === "success" ? "success" : "dropped"),
                r.status + (r.error_message ? ": " + r.error_message : ""));
  body.appendChild(st);
  const links = el("div", "links");
  const meta = el("a", "meta", "metadata");
  meta.href = `/meta/${encodeURIComponent(r.key)}`; meta.target = "_blank";
  links.appendChild(meta);
  if (r.status === "success") {
    const sim2 = el("a", "similar", "similar");
    sim2.href = "#";
    sim2.addEventListener("click", (e) => { e.preventDefault(); like = r.key; $("q").value = ""; run(false); });
    links.appendChild(sim2);
  }
  if (r.domain) links.appendChild(el("span", "domain", r.domain));
  body.appendChild(links);
  c.appendChild(body);
  return c;
}

async function run(append) {
  if (!append) offset = 0;
  const p = params();
  if (offset) p.set("offset", String(offset));
  if (!append) {
    const shown = params();
    history.replaceState(null, "", shown.toString() ? `?${shown}` : location.pathname);
  }
  const summary = $("summary");
  summary.className = ""; summary.textContent = "searching…";
  let data;
  try {
    const resp = await fetch(`/api/search?${p}`);
    data = await resp.json();
    if (!resp.ok || data.error) throw new Error(data.error || resp.statusText);
  } catch (e) {
    summary.className = "error"; summary.textContent = `error: ${e.message}`;
    return;
  }
  const grid = $("grid");
  if (!append) grid.replaceChildren();
  for (const r of data.results) grid.appendChild(card(r));
  offset += data.results.length;
  const what = data.mode === "browse" ? `${data.total} samples match the filters`
    : data.mode === "similar" ? `${data.results.length} nearest to ${like}`
    : `${data.results.length} results for “${$("q").value}” (${data.searched} indexed, ${data.index})`;
  summary.textContent = what;
  summary.dataset.mode = data.mode;
  $("more").hidden = !(data.mode === "browse" ? offset < data.total : data.results.length >= Number($("k").value || 60));
}

async function init() {
  const url = new URLSearchParams(location.search);
  try {
    const info = await (await fetch("/api/info")).json();
    fill($("status"), info.statuses); fill($("domain"), info.domains); fill($("lang"), info.languages);
    document.title = `clipcrawl browse – ${info.dataset}`;
    if (info.search_error) $("q").placeholder = `search unavailable: ${info.search_error}`;
    const prov = info.provenance || {};
    const pairs = (o) => Object.entries(o || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    $("provenance").textContent = [
      Object.keys(prov.refused || {}).length ? `refused by opt-outs: ${pairs(prov.refused)}` : "",
      prov.ai_generated_kept ? `kept AI-generated (IPTC/C2PA): ${prov.ai_generated_kept}` : "",
      Object.keys(prov.licences_kept || {}).length ? `kept licences: ${pairs(prov.licences_kept)}` : "",
    ].filter(Boolean).join(" · ");
  } catch (e) { /* filters stay empty; results still load */ }
  for (const f of FIELDS) if (url.has(f)) $(f).value = url.get(f);
  like = url.get("like") || "";
  $("search").addEventListener("submit", (e) => { e.preventDefault(); like = ""; run(false); });
  $("clear").addEventListener("click", () => { $("q").value = ""; like = ""; run(false); });
  for (const f of FIELDS.slice(1)) $(f).addEventListener("change", () => run(false));
  $("more").addEventListener("click", () => run(true));
  await run(false);
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", init);
