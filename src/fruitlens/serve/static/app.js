// fruitlens page: 1 to 5 photos of one fruit to /api/v1/identify, the answer in French or English,
// a correction to /api/v1/feedback only with consent. No build step, no libraries.
"use strict";
const $ = (id) => document.getElementById(id);
const pct = (p) => p >= 0.9995 ? ">99.9%" : p < 0.0005 ? "<0.1%" : (p * 100).toFixed(p >= 0.1 ? 0 : 1) + "%";
const words = (s) => s.charAt(0) + s.slice(1).toLowerCase();
const MAX_PHOTOS = 5;

const T = {
  en: {
    lead: "Take or choose 1 to 5 photos of one fruit, vegetable or nut (whole, cut open, its leaf): see what it is, how sure the model is, what it is like, and the most similar photos it knows.",
    take: "Take a photo", choose: "Choose photos", add: "Add a photo of it", clear: "Another fruit",
    more: "Not sure? Add another photo of the same fruit (whole, cut open, the leaf): the answer uses them all.",
    looking: "Looking at your photos…", failed: "Could not use this photo — ", top5: "Top 5",
    similar: "Most similar photos", about: "About", aboutGuess: "About {0} (the best guess)",
    notSure: "Not sure", bestGuess: "Best guess: {0} ({1})", confidence: "Confidence {0}",
    familyOnly: "{0} — {1}?", familyConf: "Sure it is {0} ({1}); not which kind",
    novel: "This photo is unlike every photo the model learned from: it may not be a fruit it knows.",
    low: "The model is not confident enough to name it.",
    combined: "{0} photos: their answers combined.", similarity: "similarity {0}",
    wrong: "Wrong answer? Say what it is", what: "What is it?",
    consent: "I agree that this photo is kept, without its metadata (no GPS position, no camera details), to improve the identification. I can ask for it to be deleted with the receipt.",
    send: "Send", sentNo: "Thank you. Nothing was kept (you did not agree to it being kept).",
    sentYes: "Thank you. Kept until {0}. Receipt: {1}", deleteIt: "Delete it now", deleted: "Deleted.",
    privacy: "Photos are kept only if you agree, without their metadata, and can be deleted.",
    maxPhotos: "At most 5 photos at once.",
  },
  fr: {
    lead: "Prenez ou choisissez 1 à 5 photos d'un même fruit, légume ou fruit à coque (entier, coupé, sa feuille) : voyez ce que c'est, à quel point le modèle en est sûr, ses caractéristiques et les photos les plus proches qu'il connaît.",
    take: "Prendre une photo", choose: "Choisir des photos", add: "Ajouter une photo", clear: "Un autre fruit",
    more: "Pas sûr ? Ajoutez une autre photo du même fruit (entier, coupé, la feuille) : la réponse les utilise toutes.",
    looking: "Analyse de vos photos…", failed: "Impossible d'utiliser cette photo — ", top5: "Les 5 plus probables",
    similar: "Photos les plus proches", about: "À propos", aboutGuess: "À propos de {0} (la meilleure hypothèse)",
    notSure: "Pas sûr", bestGuess: "Meilleure hypothèse : {0} ({1})", confidence: "Confiance {0}",
    familyOnly: "{0} — {1} ?", familyConf: "C'est sûrement : {0} ({1}) ; la variété est incertaine",
    novel: "Cette photo ne ressemble à aucune de celles que le modèle a apprises : ce n'est peut-être pas un fruit qu'il connaît.",
    low: "Le modèle n'est pas assez sûr pour le nommer.",
    combined: "{0} photos : leurs réponses combinées.", similarity: "similarité {0}",
    wrong: "Mauvaise réponse ? Dites ce que c'est", what: "Qu'est-ce que c'est ?",
    consent: "J'accepte que cette photo soit conservée, sans ses métadonnées (ni position GPS, ni détails de l'appareil), pour améliorer l'identification. Je peux demander sa suppression avec le reçu.",
    send: "Envoyer", sentNo: "Merci. Rien n'a été conservé (vous n'avez pas donné votre accord).",
    sentYes: "Merci. Conservée jusqu'au {0}. Reçu : {1}", deleteIt: "La supprimer maintenant", deleted: "Supprimée.",
    privacy: "Les photos ne sont conservées qu'avec votre accord, sans leurs métadonnées, et peuvent être supprimées.",
    maxPhotos: "5 photos au plus à la fois.",
  },
};
const fmt = (s, ...a) => s.replace(/\{(\d)\}/g, (_, i) => a[+i]);

let lang = (localStorage.getItem("fruitlens-lang") || (navigator.language || "en")).slice(0, 2).toLowerCase();
if (!T[lang]) lang = "en";
let photos = [];  // File objects of the fruit being identified
let last = null;  // the last answer

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

function translate() {
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = T[lang][e.dataset.t];
  for (const b of document.querySelectorAll(".lang")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  document.title = lang === "fr" ? "fruitlens : quel fruit est-ce ?" : "fruitlens: which fruit is it?";
  loadSpecies();
  if (last) show(last.answer);
}

async function loadSpecies() {
  try {
    const res = await fetch(`/api/v1/species?lang=${lang}`);
    const list = await res.json();
    $("species-names").replaceChildren(...list.species.map((s) => el("option", { value: s.display_name })));
    $("species-names").dataset.map = JSON.stringify(Object.fromEntries(list.species.map((s) => [s.display_name, s.name])));
    $("attribution").replaceChildren(...list.attributions.map((a) => el("span", {}, [
      a.text.split(a.dataset)[0], el("a", { href: a.source, textContent: a.dataset }),
      a.text.split(a.dataset).slice(1).join(a.dataset).split(a.license)[0],
      el("a", { href: a.license_url, textContent: a.license }), a.text.split(a.license).slice(1).join(a.license) + " ",
    ])));
  } catch (err) { /* the page still works without the list */ }
}

function addPhotos(files) {
  for (const f of files) {
    if (photos.length >= MAX_PHOTOS) { $("status").className = "status error"; $("status").textContent = T[lang].maxPhotos; break; }
    photos.push(f);
  }
  $("add").hidden = photos.length >= MAX_PHOTOS;
  $("thumbs").replaceChildren(...photos.map((f) => el("li", {}, [el("img", { src: URL.createObjectURL(f), alt: "" })])));
  $("tray").hidden = photos.length === 0;
}

async function identify() {
  if (!photos.length) return;
  $("status").className = "status";
  $("status").textContent = T[lang].looking;
  $("result").hidden = true;
  const body = new FormData();
  photos.forEach((f, i) => body.append("photo", f, f.name || `photo-${i + 1}.jpg`));
  let answer;
  try {
    const res = await fetch(`/api/v1/identify?lang=${lang}`, { method: "POST", body });
    answer = await res.json();
    if (!res.ok || !answer.ok) throw new Error(answer.detail ? `${answer.reason}: ${answer.detail}` : `error ${res.status}`);
  } catch (err) {
    $("status").className = "status error";
    $("status").textContent = T[lang].failed + err.message;
    return;
  }
  $("status").textContent = "";
  last = { answer, first: photos[0] };
  show(answer);
}

async function relabel() {  // the same answer's names in the other language
  if (!last) return;
  const res = await fetch(`/api/v1/species/${encodeURIComponent(last.answer.predicted)}?lang=${lang}`);
  if (res.ok) last.answer.species = (await res.json()).species;
}

function show(a) {
  const t = T[lang];
  const photo = $("photo");
  if (photo.dataset.url) URL.revokeObjectURL(photo.dataset.url);
  photo.dataset.url = URL.createObjectURL(last.first);
  photo.src = photo.dataset.url;
  const s = a.species;
  const name = s.display_name, family = s.family_name;
  const verdict = $("verdict");
  if (a.not_sure) {
    verdict.textContent = t.notSure;
    verdict.className = "unsure";
    $("confidence").textContent = fmt(t.bestGuess, name, pct(a.probability));
    $("why").textContent = a.why_not_sure === "unlike the training images" ? t.novel : t.low;
    $("why").hidden = false;
  } else if (a.level === "family") {
    const inFamily = a.top5.filter((x, i) => i < 3).map((x) => x.name).join(" / ");
    verdict.textContent = fmt(t.familyOnly, family, inFamily);
    verdict.className = "family";
    $("confidence").textContent = fmt(t.familyConf, family, pct(a.family_probability));
    $("why").hidden = true;
  } else {
    verdict.textContent = name;
    verdict.className = "";
    $("confidence").textContent = fmt(t.confidence, pct(a.probability));
    $("why").hidden = true;
  }
  $("combined").hidden = a.photos.length < 2;
  $("combined").textContent = fmt(t.combined, a.photos.length);

  $("top5").replaceChildren(...a.top5.map((x) => el("li", {}, [
    el("span", { textContent: x.name }), el("span", { className: "p", textContent: pct(x.probability) }),
    el("span", { className: "bar" }, [el("span", { style: `width:${(x.probability * 100).toFixed(1)}%` })]),
  ])));

  $("info-title").textContent = a.not_sure ? fmt(t.aboutGuess, name) : `${t.about} : ${name}`.replace(" :", lang === "fr" ? " :" : ":");
  $("info-note").hidden = !s.note;
  $("info-note").textContent = s.note || "";
  $("description").hidden = !s.description;
  $("description").textContent = s.description || "";
  $("info").replaceChildren(...s.attributes.flatMap((x) => [
    el("dt", { textContent: lang === "fr" ? x.attribute : words(x.attribute) }),
    el("dd", { textContent: lang === "fr" ? x.value : words(x.value) }),
  ]));
  $("sources").textContent = s.sources.map((x) => x.text).join(" ");

  $("similar").replaceChildren(...a.similar.map((n) => el("li", {}, [
    el("img", { src: n.url, alt: n.label || "", loading: "lazy" }),
    el("div", { textContent: n.label || "" }),
    el("div", { className: "sim", textContent: fmt(t.similarity, n.similarity.toFixed(2)) }),
  ])));
  $("feedback").hidden = false;
  $("feedback-status").textContent = "";
  $("result").hidden = false;
}

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
  const res = await fetch(`/api/v1/feedback?lang=${lang}`, { method: "POST", body });
  const answer = await res.json();
  const status = $("feedback-status");
  if (!res.ok || !answer.ok) { status.textContent = t.failed + (answer.detail || res.status); return; }
  if (!answer.stored) { status.textContent = t.sentNo; return; }
  status.replaceChildren(fmt(t.sentYes, answer.keep_until.slice(0, 10), answer.receipt) + " ",
    el("button", { type: "button", className: "link", id: "delete", textContent: t.deleteIt, onclick: async () => {
      const r = await fetch(answer.delete_url, { method: "DELETE" });
      status.textContent = r.ok ? t.deleted : t.failed + r.status;
    } }));
}

function reset() { photos = []; last = null; addPhotos([]); $("result").hidden = true; $("status").textContent = ""; }
for (const id of ["camera", "choose"]) {  // a new fruit: its photos, identified at once
  $(id).addEventListener("change", (e) => { reset(); addPhotos(e.target.files); e.target.value = ""; identify(); });
}
$("more").addEventListener("change", (e) => { addPhotos(e.target.files); e.target.value = ""; identify(); });
$("clear").addEventListener("click", reset);
$("feedback").addEventListener("submit", sendFeedback);
for (const b of document.querySelectorAll(".lang")) {
  b.addEventListener("click", async () => {
    lang = b.dataset.lang; localStorage.setItem("fruitlens-lang", lang);
    await relabel(); translate();
  });
}
translate();
