"""The "not sure" rules chosen on validation, with several collections (plain Python, no Spark):
the species threshold every collection's answers keep the precision at, the family level chosen on
the photos left below it, and a novelty limit that keeps each collection's own photos; and the
candidate chosen on validation."""

import numpy as np
import pytest

from fruitlens import FruitlensError
from fruitlens.engine.calibrate import calibrate, joint_thresholds, novelty_threshold_of, thresholds
from fruitlens.engine.data import Scores
from fruitlens.engine.evaluate import answers
from fruitlens.engine.model import PortableModel
from fruitlens.engine.solvers import Candidate
from fruitlens.engine.stages import CandidateResults, Fitted, choose

CLASSES = ["Apple Golden", "Apple Granny Smith", "Banana", "Lime"]
FAMILIES = ["Apple", "Apple", "Banana", "Lime"]


def model() -> PortableModel:
    d = 3
    return PortableModel(
        classes=CLASSES,
        families=FAMILIES,
        mean=np.zeros(d),
        std=np.ones(d),
        projection=None,
        layers=[(np.zeros((4, d)), np.zeros(4))],
        threshold=0.0,
        refs=np.eye(4, d),
        novelty_threshold=np.inf,
    )


def scores() -> Scores:
    """Collection 0, turntable frames: always sure and right. Collection 1, shop photos: sure and right
    (p 0.91), unsure and right (0.61), unsure and wrong (0.58), or torn between the two apples (0.48
    each: the family is right, the species half the time)."""
    rng = np.random.default_rng(0)
    rows_y, rows_c, rows_p, rows_n = [], [], [], []

    def row(y, c, winner, p, rest, novelty):
        probs = np.full(4, rest)
        probs[winner] = p
        rows_y.append(y), rows_c.append(c), rows_p.append(probs), rows_n.append(novelty)

    for i in range(200):  # turntable: near their references
        row(i % 4, 0, i % 4, 0.97, 0.01, rng.uniform(0.1, 0.3))
    for i in range(200):  # shop photos: farther from theirs
        y, novelty = i % 4, rng.uniform(0.3, 0.6)
        if i < 120:
            row(y, 1, y, 0.91, 0.03, novelty)
        elif i < 180 and y in (0, 1):
            row(y, 1, 0, 0.48, 0.02, novelty)
            rows_p[-1][1] = 0.48
        elif i < 180:
            row(y, 1, y, 0.61, 0.13, novelty)
        else:
            row(y, 1, (y + 2) % 4, 0.58, 0.14, novelty)
    return Scores(np.array(rows_y), np.array(rows_c), np.array(rows_p), np.array(rows_n))


def test_family_level_is_chosen_even_when_one_collection_is_always_sure():
    m, s = model(), scores()
    t_species, t_family = thresholds(m, s, 0.95)
    assert 0.58 < t_species <= 0.61  # every right shop answer, none of the wrong ones
    assert 0.58 < t_family <= 0.96  # "an apple": the two apples' summed probability, not the wrong ones'
    m.threshold, m.family_threshold = t_species, t_family
    shop = s.collection == 1
    a = answers(m, s.y[shop], s.probs[shop], s.novelty[shop])
    assert a["answered_species"] == 0.75 and a["answered_family_only"] == 0.15 and a["family_answers_right"] == 1.0
    assert a["answers_right"] >= 0.95


def test_novelty_limit_keeps_each_collections_own_photos():
    m, s = model(), scores()
    limit = novelty_threshold_of(m, s, 0.95)
    for c in (0, 1):
        assert (s.novelty[s.collection == c] <= limit).mean() >= 0.95
    # one quantile over all photos would have turned away many more of the shop photos
    pooled = np.quantile(s.novelty, 0.95)
    assert (s.novelty[s.collection == 1] > pooled).mean() > (s.novelty[s.collection == 1] > limit).mean()


def test_calibrated_thresholds_hold_on_every_collection_and_leave_the_fit_split_model_as_it_was():
    m, s = model(), scores()
    t = calibrate(m, s, 0.95)
    calibrated = t.applied_to(m)
    assert (calibrated.threshold, calibrated.family_threshold, calibrated.novelty_threshold) == (
        t.species,
        t.family,
        t.novelty,
    )
    for c in (0, 1):
        rows = s.collection == c
        a = answers(calibrated, s.y[rows], s.probs[rows], s.novelty[rows])
        assert a["answers_right"] >= 0.95
    assert (m.threshold, m.family_threshold, m.novelty_threshold) == (0.0, np.inf, np.inf)  # a copy was calibrated
    assert answers(m, s.y, s.probs, s.novelty)["not_sure"] == 0.0


def test_the_choice_is_the_best_on_validation_among_the_default_kind_the_first_fitted_on_a_tie():
    def fitted(name, accuracy, f1):
        return Fitted(Candidate.parse(name), None, None, {1: {"accuracy": accuracy, "macro_f1": f1}}, 1, None)

    results = CandidateResults(
        (
            fitted("lr_full:1e-3", 0.9, 0.8),
            fitted("lr_full:1e-4", 0.9, 0.8),
            fitted("lr_pca:1e-4", 0.9, 0.85),
            fitted("mlp:64", 0.95, 0.9),
        )
    )
    assert choose(results, None).candidate.name == "mlp:64"
    assert choose(results, "lr_full").candidate.name == "lr_full:0.001"
    assert choose(results, "lr_full:0.0001").candidate.name == "lr_full:0.0001"
    with pytest.raises(FruitlensError, match="--default lr_full:1 is not among --candidates"):
        choose(results, "lr_full:1")


def test_predict_may_average_only_the_views_every_collection_was_embedded_with():
    from fruitlens.engine.data import Collection, views_in, views_note
    from fruitlens.storage.location import Location

    def coll(name, views, crop=0.7):
        return Collection(name, Location.of(f"/nowhere/{name}"), {"views": views, "crop": crop} if views > 1 else {})

    assert views_in([coll("shop", 12), coll("turntable", 1)]) == [1]
    note = views_note([coll("shop", 12), coll("turntable", 1)])
    assert "turntable (embedded with 1)" in note and "--views 12" in note and "shop" not in note.split(":")[1]
    assert views_in([coll("shop", 12), coll("turntable", 4)]) == [1, 2, 4]
    assert "--views 12" in views_note([coll("shop", 12), coll("turntable", 4)])
    assert views_in([coll("shop", 12), coll("other", 12)]) == [1, 2, 4, 12] and views_note([coll("shop", 12)]) is None
    assert views_in([coll("shop", 12), coll("other", 12, crop=0.5)]) == [1]  # views cut otherwise
    assert "crop" in views_note([coll("shop", 12), coll("other", 12, crop=0.5)])


def test_trains_scoring_is_predicts():
    """The photos' views as train's evaluation reads them give predict's probabilities and novelty."""
    from fruitlens.embedding.views import Views
    from fruitlens.engine.data import scored

    rng = np.random.default_rng(1)
    d = 3
    m = PortableModel(
        classes=CLASSES,
        families=FAMILIES,
        mean=np.zeros(d),
        std=np.ones(d),
        projection=None,
        layers=[(rng.normal(size=(4, d)), rng.normal(size=4))],
        threshold=0.5,
        refs=rng.normal(size=(6, d)),
        novelty_threshold=0.3,
    )
    names = list(Views(12).names)
    x = rng.normal(size=(5, d)).astype(np.float32)
    other = [rng.normal(size=(11, d)).astype(np.float32) for _ in x]
    for count in (1, 2, 4, 12):
        probs, novelty = scored(m, x, other, [names] * len(x), count)
        rows = np.concatenate(
            [
                np.stack([x[i] if n == "whole" else other[i][names.index(n) - 1] for n in Views(count).names])
                for i in range(len(x))
            ]
        )
        preds = m.predict(rows, views=count)
        np.testing.assert_array_equal(probs.max(axis=1), [p.top[0][1] for p in preds])
        np.testing.assert_array_equal(novelty, [p.novelty for p in preds])
    with pytest.raises(FruitlensError, match="no 'centre' view"):
        scored(m, x, [None] * len(x), [["whole"]] * len(x), 2)


def slack_scores() -> Scores:
    """One shop collection: 80 photos sure and right (p 0.9); 10 torn between the two apples (the
    family right); 2 bananas the model sees as torn apples (the family wrong too)."""
    rows_p, rows_y = [], []
    for i in range(80):
        p = np.full(4, 0.1 / 3)
        p[i % 4] = 0.9
        rows_p.append(p), rows_y.append(i % 4)
    for y in [0] * 5 + [1] * 5 + [2, 2]:
        rows_p.append(np.array([0.45, 0.45, 0.05, 0.05])), rows_y.append(y)
    n = len(rows_y)
    return Scores(np.array(rows_y), np.zeros(n, np.int64), np.array(rows_p), np.full(n, 0.2))


def test_joint_thresholds_let_family_answers_use_what_species_answers_leave_above_the_target():
    m, s = model(), slack_scores()
    separate = thresholds(m, s, 0.95)
    joint = joint_thresholds(m, s, 0.95)  # the species threshold kept
    assert separate[1] > 0.9  # family answers alone 10 of 12 right (83%): the separate rule turns them all away
    assert joint[0] == separate[0]  # species answers alone stay at the target (the floor)
    for (t_s, t_f), answered in ((separate, 80), (joint, 92)):
        m.threshold, m.family_threshold = t_s, t_f
        a = answers(m, s.y, s.probs, s.novelty)
        assert round(a["answered"] * len(s.y)) == answered and a["answers_right"] >= 0.95
    assert a["answers_right"] == round(90 / 92, 4) and a["answered_family_only"] == round(12 / 92, 4)


def test_joint_thresholds_hold_on_every_collection_and_never_answer_less_than_separate_ones():
    m, s = model(), scores()
    for target in (0.9, 0.95, 0.99):
        answered = {}
        for name, (t_s, t_f) in (("separate", thresholds(m, s, target)), ("joint", joint_thresholds(m, s, target))):
            m.threshold, m.family_threshold = t_s, t_f
            got = [
                answers(m, s.y[s.collection == c], s.probs[s.collection == c], s.novelty[s.collection == c])
                for c in (0, 1)
            ]
            assert all(a["answers_right"] >= target for a in got)
            answered[name] = np.mean([a["answered"] for a in got])  # the collections count alike
        assert answered["joint"] >= answered["separate"]


def test_temperature_is_chosen_on_validation_and_travels_with_the_model(tmp_path):
    """An overconfident classifier (logits 10x too large) on photos it gets right 70% of the time:
    the temperature with the least validation log-loss softens it, keeps every photo's best
    species, and the saved model scores as the calibrated one (the one scoring function)."""
    from fruitlens.engine.calibrate import temperature_of, with_temperature

    rng = np.random.default_rng(3)
    d = 4
    m = PortableModel(
        classes=CLASSES,
        families=FAMILIES,
        mean=np.zeros(d),
        std=np.ones(d),
        projection=None,
        layers=[(10.0 * np.eye(4, d), np.zeros(4))],
        threshold=0.0,
        refs=np.eye(4, d),
        novelty_threshold=np.inf,
    )
    x = rng.normal(size=(300, d)) * 0.3
    y = rng.integers(0, 4, 300)
    right = rng.random(300) < 0.7
    x[np.arange(300), np.where(right, y, (y + 1) % 4)] += 1.0  # 70% of photos look like their species

    def rescore(model):
        probs, nov, _ = model.scores(x)
        return Scores(y, np.zeros(len(y), np.int64), probs, nov)

    t, validation = temperature_of(m, rescore)
    assert t > 2.0  # softer than fit
    before = rescore(m)
    np.testing.assert_array_equal(validation.probs.argmax(axis=1), before.probs.argmax(axis=1))
    assert validation.probs.max(axis=1).mean() < before.probs.max(axis=1).mean()
    assert m.layers[0][0][0, 0] == 10.0  # a copy was tempered
    calibrated = calibrate(m, validation, 0.9, t).applied_to(m)
    np.testing.assert_allclose(calibrated.scores(x)[0], validation.probs)
    calibrated.save(str(tmp_path))
    loaded = PortableModel.load_folder(str(tmp_path))
    np.testing.assert_allclose(loaded.scores(x)[0], validation.probs)
    assert loaded.meta["temperature"] == t and with_temperature(m, 1.0) is m
