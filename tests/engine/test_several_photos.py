"""How the photos of one question combine (`model.combine_photos`), on probabilities alone: the
rule the engine uses for `predict --together` and the service's identify with several photos. The
same rule on real photos through a trained model: tests/engine/test_collections.py."""

import numpy as np
import pytest

from fruitlens.engine.model import PHOTO_RULE, PHOTO_RULES, combine_photos

CLOSE_UP = [0.9995, 0.0003, 0.0002]  # answered rightly alone, very sure
WIDE = [0.40, 0.35, 0.25]  # a shelf: the right species first, far from sure
OTHER = [0.001, 0.998, 0.001]  # a photo of another species, sure of it
KNOWN = 0.5  # novelty threshold: below it a photo looks like the training images


def combined(*photos, novelty=None, rule=PHOTO_RULE):
    novelty = [0.1] * len(photos) if novelty is None else novelty
    p, n = combine_photos(np.array(photos), np.array(novelty), KNOWN, rule)
    return p, float(n)


def test_a_wide_shot_added_to_a_sure_close_up_keeps_the_answer_sure():
    p, _ = combined(CLOSE_UP, WIDE)
    assert p.argmax() == 0 and p[0] >= CLOSE_UP[0]  # the wide shot, weak evidence, does not dilute it
    mean, _ = combined(CLOSE_UP, WIDE, rule="mean")
    assert mean[0] == pytest.approx(0.69975)  # what the mean of probabilities said: "not sure, 70%"


def test_photos_of_two_species_lower_the_confidence_instead_of_naming_one_surely():
    p, _ = combined(CLOSE_UP, OTHER)
    assert p.max() < 0.8  # neither species at the confidence either photo had alone
    confident, _ = combined(CLOSE_UP, OTHER, rule="confident")
    assert confident.max() == CLOSE_UP[0]  # the most confident photo would name one surely


def test_one_photo_is_answered_as_it_is_alone_by_every_rule():
    for rule in PHOTO_RULES:
        p, n = combined(WIDE, novelty=[0.3], rule=rule)
        np.testing.assert_allclose(p, WIDE, atol=1e-12)
        assert n == 0.3


def test_a_photo_unlike_the_training_images_does_not_vote_unless_every_photo_is():
    p, n = combined(WIDE, OTHER, novelty=[0.2, 0.9])  # the second photo: a cat, say
    np.testing.assert_allclose(p, WIDE, atol=1e-12)
    assert n == 0.2  # the question looks like the training images: a photo vouches for it
    p, n = combined(WIDE, OTHER, novelty=[0.7, 0.9])
    assert n == 0.7 > KNOWN  # every photo unlike them: so is the question
    assert p.argmax() == 1  # (both vote: the rules answer "unlike the training images" anyway)


def test_questions_combine_vectorised_as_one_by_one():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(7, 3))
    novelty = rng.uniform(0, 1, size=(7, 3))
    together, nov = combine_photos(probs, novelty, KNOWN)
    for q in range(7):
        one, n = combine_photos(probs[q], novelty[q], KNOWN)
        np.testing.assert_allclose(together[q], one, atol=1e-12)
        assert nov[q] == n
    np.testing.assert_allclose(together.sum(axis=-1), 1.0)


def test_photos_naming_different_species_a_sure_one_stands_two_sure_ones_are_a_doubt():
    """The rule shipped (`agreed`): a shelf shot whose best guess is another species leaves a sure
    close-up's answer as it is; two photos each sure of another species answer neither surely."""
    shelf = [0.30, 0.45, 0.25]  # best guess: the second species, far from sure
    p, _ = combine_photos(np.array([CLOSE_UP, shelf]), np.array([0.1, 0.1]), KNOWN, "agreed", sure=0.9)
    np.testing.assert_allclose(p, CLOSE_UP, atol=1e-12)
    p, _ = combine_photos(np.array([CLOSE_UP, OTHER]), np.array([0.1, 0.1]), KNOWN, "agreed", sure=0.9)
    assert p.max() < 0.9  # below the species threshold: "not sure"
    p, _ = combine_photos(np.array([CLOSE_UP, CLOSE_UP]), np.array([0.1, 0.1]), KNOWN, "agreed", sure=0.9)
    assert p[0] > CLOSE_UP[0]  # agreeing photos are evidence: surer together
