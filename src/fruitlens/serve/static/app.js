// fruitlens page: 1 to 5 photos of one fruit to /api/v1/identify, the answer in French or English
// (every word: the page's own from T, the answer's from the API in the same language), a correction
// to /api/v1/feedback only with consent, the last answers kept in this browser only (localStorage).
// No build step, no libraries, no inline script (the page can be served with a strict CSP).
"use strict";
const $ = (id) => document.getElementById(id);
const MAX_PHOTOS = 5;
const HISTORY_KEY = "fruitlens-history", KEY_KEY = "fruitlens-key", LANG_KEY = "fruitlens-lang";
const HISTORY_MAX = 12;

const T = {
  en: {
    lead: "Take or choose 1 to 5 photos of one fruit, vegetable or nut: see what it is, how sure the model is, what it is like, and the most similar photos it knows.",
    take: "Take a photo", choose: "Choose photos", add: "Add a photo of it", clear: "Another fruit",
    looking: "Looking at your photos…", failed: "Could not identify: ", top5: "Top 5",
    similar: "Most similar photos", similarHow: "Photos the model finds closest to yours, from the collections it knows (with their licence).",
    about: "About: {0}", aboutGuess: "About {0} (the best guess)", family: "Family: {0}",
    notSure: "Not sure", bestGuess: "Best guess: {0} ({1})", confidence: "Confidence {0}",
    familyOnly: "{0}: which kind?", familyConf: "{0} ({1})", notProduce: "Not a fruit or vegetable",
    combined: "{0} photos: their answers combined.", tooMany: "At most 5 photos at once: the first 5 are used, {0} left out.",
    descriptionEn: "The shop's description (in English)", sources: "Source: ", sourcesMany: "Sources: ",
    wrong: "Wrong answer? Say what it is", what: "What is it?",
    consent: "I agree that this photo is kept, without its metadata (no GPS position, no camera details), to improve the identification. I can ask for it to be deleted with the receipt.",
    send: "Send", sentNo: "Thank you. Nothing was kept (you did not agree to it being kept).",
    sentYes: "Thank you. Kept until {0}. Receipt: {1}", deleteIt: "Delete it now", deleted: "Deleted.",
    privacy: "Photos are kept only if you agree, without their metadata, and can be deleted.",
    history: "Your last answers", historyHow: "Kept in this browser only, never sent.", historyClear: "Clear my answers",
    keyTitle: "Access key", keyLabel: "This service needs a key:", keyHint: "Kept in this browser and sent only to this service.",
    licence: "licence {0}",
  },
  fr: {
    lead: "Prenez ou choisissez 1 à 5 photos d'un même fruit, légume ou fruit à coque : voyez ce que c'est, à quel point le modèle en est sûr, ses caractéristiques et les photos les plus proches qu'il connaît.",
    take: "Prendre une photo", choose: "Choisir des photos", add: "Ajouter une photo", clear: "Un autre fruit",
    looking: "Analyse de vos photos…", failed: "Identification impossible : ", top5: "Les 5 plus probables",
    similar: "Photos les plus proches", similarHow: "Les photos que le modèle trouve les plus proches de la vôtre, dans les collections qu'il connaît (avec leur licence).",
    about: "À propos : {0}", aboutGuess: "À propos de : {0} (la meilleure hypothèse)", family: "Famille : {0}",
    notSure: "Pas sûr", bestGuess: "Meilleure hypothèse : {0} ({1})", confidence: "Confiance {0}",
    familyOnly: "{0} : quelle variété ?", familyConf: "{0} ({1})", notProduce: "Ni un fruit ni un légume",
    combined: "{0} photos : leurs réponses combinées.", tooMany: "5 photos au plus à la fois : les 5 premières sont utilisées, {0} laissée(s) de côté.",
    descriptionEn: "La description du magasin (en anglais)", sources: "Source : ", sourcesMany: "Sources : ",
    wrong: "Mauvaise réponse ? Dites ce que c'est", what: "Qu'est-ce que c'est ?",
    consent: "J'accepte que cette photo soit conservée, sans ses métadonnées (ni position GPS, ni détails de l'appareil), pour améliorer l'identification. Je peux demander sa suppression avec le reçu.",
    send: "Envoyer", sentNo: "Merci. Rien n'a été conservé (vous n'avez pas donné votre accord).",
    sentYes: "Merci. Conservée jusqu'au {0}. Reçu : {1}", deleteIt: "La supprimer maintenant", deleted: "Supprimée.",
    privacy: "Les photos ne sont conservées qu'avec votre accord, sans leurs métadonnées, et peuvent être supprimées.",
    history: "Vos dernières réponses", historyHow: "Gardées dans ce navigateur seulement, jamais envoyées.", historyClear: "Effacer mes réponses",
    keyTitle: "Clé d'accès", keyLabel: "Ce service demande une clé :", keyHint: "Gardée dans ce navigateur et envoyée seulement à ce service.",
    licence: "licence {0}",
  },
};
const LOCALE = { en: "en-GB", fr: "fr-FR" };
const fmt = (s, ...a) => s.replace(/\{(\d)\}/g, (_, i) => a[+i]);

let lang = (localStorage.getItem(LANG_KEY) || (navigator.language || "en")).slice(0, 2).toLowerCase();
if (!T[lang]) lang = "en";
let photos = [];  // File objects of the fruit being identified
let last = null;  // the last answer and the photos it is for
let names = {};   // species and family names in the page's language, by the model's name

// 0.996 -> "99.6%" / "99,6 %"; never "100%" short of certainty, never "0%" above nothing
function pct(p) {
  const f = new Intl.NumberFormat(LOCALE[lang], { style: "percent", maximumFractionDigits: 1 });
  if (p >= 0.9995 && p < 1) return ">" + f.format(0.999);
  if (p > 0 && p < 0.0005) return "<" + f.format(0.001);
  return f.format(p);
}

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

function headers() {
  const key = localStorage.getItem(KEY_KEY);
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = {};
  try { body = await res.json(); } catch (err) { body = {}; }
  if (res.status === 401) $("key-box").hidden = false, $("key-box").open = true;
  return { res, body };
}

function translate() {
  const t = T[lang];
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t[e.dataset.t];
  for (const b of document.querySelectorAll(".lang")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  document.title = lang === "fr" ? "fruitlens : quel fruit est-ce ?" : "fruitlens: which fruit is it?";
}

function attributionLine(list) {
  return list.map((a) => el("span", { className: "attribution" }, [
    a.text + " ", el("a", { href: a.source, textContent: a.dataset }), " · ",
    el("a", { href: a.license_url, textContent: a.license }), " ",
  ]));
}

async function loadSpecies() {
  try {
    const { res, body } = await api(`/api/v1/species?lang=${lang}`);
    if (!res.ok) return;
    names = {};
    for (const s of body.species) { names[s.name] = s.display_name; names[s.family] = s.family_name; }
    $("species-names").replaceChildren(...body.species.map((s) => el("option", { value: s.display_name })));
    $("species-names").dataset.map = JSON.stringify(Object.fromEntries(body.species.map((s) => [s.display_name, s.name])));
    if (!last) $("attribution").replaceChildren(...attributionLine(body.attributions));
  } catch (err) { /* the page still works without the list */ }
  showHistory();
}

function showPhotos() {
  $("add").hidden = photos.length >= MAX_PHOTOS;
  $("thumbs").replaceChildren(...photos.map((f) => el("li", {}, [el("img", { src: URL.createObjectURL(f), alt: "" })])));
}

function addPhotos(files) {
  const list = [...files];
  const room = MAX_PHOTOS - photos.length;
  photos.push(...list.slice(0, Math.max(room, 0)));
  showPhotos();
  return Math.max(list.length - Math.max(room, 0), 0);  // how many were left out
}

async function identify(leftOut = 0) {
  if (!photos.length) return;
  const t = T[lang];
  $("status").className = "status";
  $("status").textContent = t.looking;
  const body = new FormData();
  photos.forEach((f, i) => body.append("photo", f, f.name || `photo-${i + 1}.jpg`));
  let answer;
  try {
    const r = await api(`/api/v1/identify?lang=${lang}`, { method: "POST", body });
    answer = r.body;
    if (!r.res.ok || !answer.ok) throw new Error(answer.message || answer.detail || String(r.res.status));
  } catch (err) {
    $("status").className = "status error";
    $("status").textContent = t.failed + err.message;
    return;
  }
  $("status").className = leftOut ? "status notice" : "status";
  $("status").textContent = leftOut ? fmt(t.tooMany, leftOut) : "";
  const same = last && last.first === photos[0];  // the same fruit: its entry in the history is updated
  const changed = !same || last.count !== photos.length;
  last = { answer, first: photos[0], count: photos.length };
  show(answer);
  if (changed) remember(answer, photos[0], same);
}

function verdictOf(a) {
  const t = T[lang];
  if (a.not_sure) return { text: t.notSure, cls: "unsure" };
  if (a.level === "family") return { text: fmt(t.familyOnly, a.family_name), cls: "family" };
  return { text: a.answer_name, cls: "" };
}

function show(a) {
  const t = T[lang];
  const photo = $("photo");
  if (photo.dataset.url) URL.revokeObjectURL(photo.dataset.url);
  photo.dataset.url = URL.createObjectURL(last.first);
  photo.src = photo.dataset.url;
  const s = a.species;
  const notProduce = a.predicted === "(not produce)";
  const v = verdictOf(a);
  $("verdict").textContent = v.text;
  $("verdict").className = v.cls;
  if (a.not_sure) $("confidence").textContent = fmt(t.bestGuess, notProduce ? t.notProduce : s.display_name, pct(a.probability));
  else if (a.level === "family") $("confidence").textContent = fmt(t.familyConf, a.family_name, pct(a.family_probability));
  else $("confidence").textContent = fmt(t.confidence, pct(a.probability));
  $("why").hidden = !a.why;
  $("why-text").textContent = a.why ? a.why.text : "";
  $("why-next").textContent = a.why ? a.why.next_step : "";
  $("tray").hidden = false;
  $("combined").hidden = a.photos.length < 2;
  $("combined").textContent = fmt(t.combined, a.photos.length);
  $("lead").hidden = true;  // the answer takes the first screen

  $("top5").replaceChildren(...a.top5.map((x) => el("li", {}, [
    el("span", { textContent: x.name }), el("span", { className: "p", textContent: pct(x.probability) }),
    el("span", { className: "bar" }, [el("span", { style: `width:${(x.probability * 100).toFixed(1)}%` })]),
  ])));

  // About: not for something that is not produce (there is no species to describe)
  $("about").hidden = notProduce;
  $("info-title").textContent = fmt(a.not_sure ? t.aboutGuess : t.about, s.display_name);
  $("info-what").textContent = s.family !== s.name ? fmt(t.family, s.family_name) : "";
  $("info-note").hidden = !s.note;
  $("info-note").textContent = s.note || "";
  $("info").replaceChildren(...[...s.facts.map((x) => [x.label, x.value]), ...s.attributes.map((x) => [x.attribute, x.value])]
    .flatMap(([k, val]) => [el("dt", { textContent: k }), el("dd", { textContent: val })]));
  const english = lang === "en";
  $("description").hidden = !(s.description && english);
  $("description").textContent = english ? (s.description || "") : "";
  $("description-box").hidden = !(s.description && !english);
  $("description-box").open = false;
  $("description-en").textContent = english ? "" : (s.description || "");
  $("sources").replaceChildren(...(s.sources.length ? [s.sources.length > 1 ? t.sourcesMany : t.sources] : []),
    ...s.sources.flatMap((x, i) => [i ? " · " : "", el("a", { href: x.source, textContent: x.dataset }), ` (${x.author}, ${x.license})`]));

  $("similar").replaceChildren(...a.similar.map((n) => el("li", {}, [
    el("img", { src: n.url, alt: n.name || "", loading: "lazy" }),
    el("div", { className: "name", textContent: n.name || "" }),
    el("div", { className: "sim", textContent: n.closeness_text }),
    el("div", { className: "from", textContent: `${n.collection.title} · ${fmt(t.licence, n.collection.license)}` }),
  ])));
  $("attribution").replaceChildren(...attributionLine(a.attributions));
  $("feedback").hidden = false;
  $("feedback-status").textContent = "";
  $("result").hidden = false;
}

// -- the last answers, in this browser only ------------------------------------------------------
function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch (err) { return []; }
}

async function thumbnail(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const side = 64, canvas = el("canvas", { width: side, height: side });
    const scale = Math.max(side / bitmap.width, side / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    canvas.getContext("2d").drawImage(bitmap, (side - w) / 2, (side - h) / 2, w, h);
    return canvas.toDataURL("image/jpeg", 0.7);
  } catch (err) { return ""; }
}

async function remember(a, file, replace) {
  const entry = {
    time: Date.now(), predicted: a.predicted, family: a.family, level: a.level, not_sure: a.not_sure,
    probability: a.level === "family" ? a.family_probability : a.probability, thumb: await thumbnail(file),
  };
  const kept = replace ? history().slice(1) : history();
  localStorage.setItem(HISTORY_KEY, JSON.stringify([entry, ...kept].slice(0, HISTORY_MAX)));
  showHistory();
}

function showHistory() {
  const t = T[lang], list = history();
  const when = new Intl.DateTimeFormat(LOCALE[lang], { dateStyle: "short", timeStyle: "short" });
  $("history-box").hidden = list.length === 0;
  $("history").replaceChildren(...list.map((h) => {
    const name = h.predicted === "(not produce)" ? t.notProduce : (names[h.predicted] || h.predicted);
    const said = h.not_sure ? `${t.notSure} (${name} ?)`.replace(" ?)", lang === "fr" ? " ?)" : "?)")
      : h.level === "family" ? fmt(t.familyOnly, names[h.family] || h.family) : name;
    return el("li", {}, [
      el("img", { src: h.thumb || "/static/icon.svg", alt: "" }),
      el("span", { className: "said", textContent: said }),
      el("span", { className: "p", textContent: `${pct(h.probability)} · ${when.format(new Date(h.time))}` }),
    ]);
  }));
}

// -- feedback ---------------------------------------------------------------------------------------
async function sendFeedback(e) {
  e.preventDefault();
  const t = T[lang];
  const said = $("said").value.trim();
  if (!said || !last) return;
  const map = JSON.parse($("species-names").dataset.map || "{}");
  const body = new FormData();
  body.append("said", map[said] || said);
  body.append("consent", $("consent").checked ? "true" : "false");
  body.append("answered", last.answer.answer || "not sure");
  for (const p of last.answer.photos) body.append("photo_id", p.id); // every photo of the question, one receipt
  const { res, body: answer } = await api(`/api/v1/feedback?lang=${lang}`, { method: "POST", body });
  const status = $("feedback-status");
  if (!res.ok || !answer.ok) { status.textContent = t.failed + (answer.message || res.status); return; }
  if (!answer.stored) { status.textContent = t.sentNo; return; }
  const until = new Intl.DateTimeFormat(LOCALE[lang], { dateStyle: "long" }).format(new Date(answer.keep_until));
  status.replaceChildren(fmt(t.sentYes, until, answer.receipt) + " ",
    el("button", { type: "button", className: "link", id: "delete", textContent: t.deleteIt, onclick: async () => {
      const r = await api(answer.delete_url, { method: "DELETE" });
      status.textContent = r.res.ok ? t.deleted : t.failed + (r.body.message || r.res.status);
    } }));
}

function reset() {
  photos = []; last = null; showPhotos();
  $("result").hidden = true; $("lead").hidden = false; $("status").textContent = "";
}
for (const id of ["camera", "choose"]) {  // a new fruit: its photos, identified at once
  $(id).addEventListener("change", (e) => { reset(); const out = addPhotos(e.target.files); e.target.value = ""; identify(out); });
}
$("more").addEventListener("change", (e) => { const out = addPhotos(e.target.files); e.target.value = ""; identify(out); });
$("clear").addEventListener("click", reset);
$("feedback").addEventListener("submit", sendFeedback);
$("history-clear").addEventListener("click", () => { localStorage.removeItem(HISTORY_KEY); showHistory(); });
$("key").value = localStorage.getItem(KEY_KEY) || "";
$("key").addEventListener("change", () => {
  const key = $("key").value.trim();
  if (key) localStorage.setItem(KEY_KEY, key); else localStorage.removeItem(KEY_KEY);
  if (photos.length) identify();
});
for (const b of document.querySelectorAll(".lang")) {
  b.addEventListener("click", async () => {  // everything on screen again, in the other language
    lang = b.dataset.lang; localStorage.setItem(LANG_KEY, lang);
    translate();
    await loadSpecies();
    if (last && photos.length) await identify(); else showHistory();
  });
}
translate();
loadSpecies();
fetch("/api/v1/health").then((r) => r.json()).then((h) => { if (h.key_required) $("key-box").hidden = false; }).catch(() => {});
