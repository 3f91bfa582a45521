// fruitlens page: send the photo to /api/v1/identify and show the answer. No build step, no libraries.
"use strict";
const $ = (id) => document.getElementById(id);
const pct = (p) => p >= 0.9995 ? ">99.9%" : p < 0.0005 ? "<0.1%" : (p * 100).toFixed(p >= 0.1 ? 0 : 1) + "%";
const words = (s) => s.charAt(0) + s.slice(1).toLowerCase();

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

async function identify(file) {
  if (!file) return;
  $("status").className = "status";
  $("status").textContent = "Looking at your photo…";
  $("result").hidden = true;
  const body = new FormData();
  body.append("photo", file, file.name || "photo.jpg");
  let answer;
  try {
    const res = await fetch("/api/v1/identify", { method: "POST", body });
    answer = await res.json();
    if (!res.ok || !answer.ok) throw new Error(answer.detail ? `${answer.reason}: ${answer.detail}` : `error ${res.status}`);
  } catch (err) {
    $("status").className = "status error";
    $("status").textContent = "Could not use this photo — " + err.message;
    return;
  }
  $("status").textContent = "";
  show(answer, file);
}

function show(a, file) {
  const photo = $("photo");
  if (photo.dataset.url) URL.revokeObjectURL(photo.dataset.url);
  photo.dataset.url = URL.createObjectURL(file);
  photo.src = photo.dataset.url;

  const verdict = $("verdict");
  if (a.not_sure) {
    verdict.textContent = "Not sure";
    verdict.className = "unsure";
    $("confidence").textContent = `Best guess: ${a.predicted} (${pct(a.probability)})`;
    $("why").textContent = a.why_not_sure === "unlike the training images"
      ? "This photo is unlike every photo the model learned from: it may not be a fruit it knows."
      : "The model is not confident enough to name it.";
    $("why").hidden = false;
  } else {
    verdict.textContent = a.predicted;
    verdict.className = "";
    $("confidence").textContent = `Confidence ${pct(a.probability)}`;
    $("why").hidden = true;
  }

  $("top5").replaceChildren(...a.top5.map((t) => el("li", {}, [
    el("span", { textContent: t.label }), el("span", { className: "p", textContent: pct(t.probability) }),
    el("span", { className: "bar" }, [el("span", { style: `width:${(t.probability * 100).toFixed(1)}%` })]),
  ])));

  const s = a.species;
  $("info-title").textContent = a.not_sure ? `About ${s.name} (the best guess)` : `About ${s.name}`;
  $("info-note").hidden = s.has_information;
  $("info-note").textContent = s.note || "";
  $("info").replaceChildren(...s.attributes.flatMap((x) => [
    el("dt", { textContent: words(x.attribute) }), el("dd", { textContent: words(x.value) }),
  ]));

  $("similar").replaceChildren(...a.similar.map((n) => el("li", {}, [
    el("img", { src: n.url, alt: n.label || "similar image", loading: "lazy" }),
    el("div", { textContent: n.label || "" }),
    el("div", { className: "sim", textContent: `similarity ${n.similarity.toFixed(2)}` }),
  ])));
  $("result").hidden = false;
}

for (const id of ["camera", "choose"]) {
  $(id).addEventListener("change", (e) => { identify(e.target.files[0]); e.target.value = ""; });
}
