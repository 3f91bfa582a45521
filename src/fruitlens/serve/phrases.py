"""Every sentence the API says to a person, in English and French, in one place: why an answer is
"not sure" (and what to do next), how similar a similar photo is, what an attribution says, and the
errors' details the page shows.

The three reasons an answer is not a species (the engine's `why_not_sure`, or a family-level answer):
- "not a fruit or vegetable": the best class is `(not produce)` (cartons, packaged products);
- "unlike the training images": the photo is farther from every training photo than the model's
  novelty threshold;
- "low confidence" (not sure) or a family-level answer: unsure between species, with the candidates
  (the species that together hold most of the probability), or the family when that one is sure.
"""

from __future__ import annotations

REASONS = {
    "not a fruit or vegetable": {
        "en": (
            "This looks like a packaged product, not a fruit or vegetable.",
            "Photograph the fruit or vegetable itself, out of its packaging.",
        ),
        "fr": (
            "On dirait un produit emballé, pas un fruit ni un légume.",
            "Photographiez le fruit ou le légume lui-même, hors de son emballage.",
        ),
    },
    "unlike the training images": {
        "en": (
            "This photo is unlike anything the model knows: it may not be a fruit or vegetable it learned.",
            "Photograph one fruit, close, in good light.",
        ),
        "fr": (
            "Cette photo ne ressemble à rien de ce que le modèle connaît : ce n'est peut-être pas un fruit "
            "ou un légume qu'il a appris.",
            "Photographiez un seul fruit, de près, bien éclairé.",
        ),
    },
    "low confidence": {
        "en": ("Unsure between {0}.", "Add another photo of the same fruit: another side, cut open, or its leaf."),
        "fr": ("Hésite entre {0}.", "Ajoutez une autre photo du même fruit : un autre côté, coupé, ou sa feuille."),
    },
    "low confidence, one candidate": {
        "en": ("Not confident enough that it is {0}.", "Add another photo of the same fruit: another side, cut open."),
        "fr": ("Pas assez sûr que ce soit : {0}.", "Ajoutez une autre photo du même fruit : un autre côté, coupé."),
    },
    "family": {
        "en": (
            "Sure it is {0}; unsure which kind: {1}.",
            "Add a photo of it cut open, or of its label, to tell the kind.",
        ),
        "fr": (
            "C'est sûrement : {0} ; la variété est incertaine : {1}.",
            "Ajoutez une photo du fruit coupé, ou de son étiquette, pour savoir la variété.",
        ),
    },
}
CONJUNCTIONS = {"or": {"en": " or ", "fr": " ou "}, "and": {"en": " and ", "fr": " et "}}

# How similar a similar photo is, in words: the cosine of the two photos' features, cut where the
# share of a GroceryStore val photo's 8 neighbours showing the same species drops (bench/similar_bench.py,
# docs/benchmarks.md "Similar photos"). Two scales: the saved index's 256-d projection (`serve --ann`)
# reads higher than the model's full inputs (the exact search). (lowest cosine, key), best first.
CLOSENESS = {
    "reduced": ((0.8, "very similar"), (0.7, "similar"), (0.6, "somewhat similar"), (-1.0, "not much alike")),
    "full": ((0.7, "very similar"), (0.6, "similar"), (0.5, "somewhat similar"), (-1.0, "not much alike")),
}
CLOSENESS_WORDS = {
    "very similar": {"en": "very similar", "fr": "très proche"},
    "similar": {"en": "similar", "fr": "proche"},
    "somewhat similar": {"en": "somewhat similar", "fr": "assez proche"},
    "not much alike": {"en": "not much alike", "fr": "peu ressemblant"},
}

ATTRIBUTION_FR = {  # a source's dataset -> its attribution's text and changes in French
    "Fruits-360": (
        "Informations sur les espèces tirées du jeu de données Fruits-360 de Mihai Oltean, sous licence "
        "CC BY-SA 4.0 ; codes des attributs traduits en mots d'après son dictionary.txt.",
        "codes des attributs traduits en mots (et en français)",
    ),
    "GroceryStore": (
        "Descriptions des produits tirées du jeu de données GroceryStore de Marcus Klasson, Cheng Zhang et "
        "Hedvig Kjellström (WACV 2019), licence MIT.",
        "conseils (se mange, se conserve) relevés dans la description et traduits",
    ),
}
PHOTOS = {  # the attribution of a collection whose photos are shown as similar photos
    "en": "Similar photos from {0} by {1}, licence {2}.",
    "fr": "Photos proches tirées de {0} de {1}, licence {2}.",
}


def closeness(similarity: float, reduced: bool = False) -> str:
    """The words for a similarity, on the scale of the index that measured it."""
    scale = CLOSENESS["reduced" if reduced else "full"]
    for lowest, key in scale:
        if similarity >= lowest:
            return key
    return scale[-1][1]


def joined(names: list[str], lang: str, conjunction: str = "or") -> str:
    """The names as "a, b or c" (or "a, b and c") in the language."""
    if len(names) <= 1:
        return "".join(names)
    words = CONJUNCTIONS[conjunction]
    return ", ".join(names[:-1]) + words.get(lang, words["en"]) + names[-1]


def reason(key: str, lang: str, *args: str, variant: str = "") -> dict:
    """{"reason": key, "text": ..., "next_step": ...} in `lang` (`variant`: a wording of the reason)."""
    text, step = REASONS[variant or key].get(lang, REASONS[variant or key]["en"])
    return {"reason": key, "text": text.format(*args), "next_step": step}


def localised_attribution(attribution: dict, lang: str) -> dict:
    if lang != "fr" or attribution.get("dataset") not in ATTRIBUTION_FR:
        return attribution
    text, changes = ATTRIBUTION_FR[attribution["dataset"]]
    return {**attribution, "text": text, "changes": changes}


# What an error means to a person, by its reason (the API's `message`, beside `reason` and `detail`,
# which stay technical and in English); the page shows `message`.
ERROR_MESSAGES = {
    "not an image": (
        "This file is not an image: choose a photo (JPEG, PNG, WebP, BMP or GIF).",
        "Ce fichier n'est pas une image : choisissez une photo (JPEG, PNG, WebP, BMP ou GIF).",
    ),
    "empty": ("This file is empty: choose a photo.", "Ce fichier est vide : choisissez une photo."),
    "truncated": (
        "This photo is incomplete (the file is cut short): send it again.",
        "Cette photo est incomplète (le fichier est tronqué) : envoyez-la de nouveau.",
    ),
    "corrupt": ("This photo is damaged and cannot be read.", "Cette photo est abîmée et ne peut pas être lue."),
    "decompression bomb": ("This image has too many pixels.", "Cette image a trop de pixels."),
    "too large": ("This photo is too large.", "Cette photo est trop lourde."),
    "unsupported media type": ("Send a photo (an image file).", "Envoyez une photo (un fichier image)."),
    "invalid request": ("The request is not valid.", "La requête n'est pas valide."),
    "too many requests": ("Too many requests: try again in a minute.", "Trop de requêtes : réessayez dans une minute."),
    "busy": ("The service is busy: try again in a moment.", "Le service est occupé : réessayez dans un instant."),
    "unauthorized": (
        "This service needs an access key: enter yours in the key field.",
        "Ce service demande une clé d'accès : saisissez la vôtre dans le champ « clé ».",
    ),
    "not found": ("Not found.", "Introuvable."),
}
ERROR_OTHER = ("Something went wrong: try again.", "Une erreur est survenue : réessayez.")


def error_message(reason: str, lang: str | None) -> str:
    en, fr = ERROR_MESSAGES.get(reason, ERROR_OTHER)
    return fr if lang == "fr" else en
