"""Faces: margin losses, the identity split, verification metrics, a real AT&T run with its
exports and the embed / verify / identify commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import zoo
from tests.conftest import shared_data
from tests.test_export import zoo_cli
from zoo import rundir, verification
from zoo.data import build, image_folder
from zoo.data.common import identity_split
from zoo.errors import ZooError
from zoo.layers import CosineLogits
from zoo.losses import MarginLoss
from zoo.recipes import load_recipe
from zoo.tasks import faces

# ---------------------------------------------------------------------------------------------
# Margin losses


def _logits(loss, labels, cosines):
    return keras.ops.convert_to_numpy(
        loss.logits(np.asarray(labels), np.asarray(cosines, "float32"))
    )


def test_arcface_adds_the_angle_margin_on_the_true_class_only():
    cos = np.array([[0.8, 0.1, -0.3], [0.2, 0.6, 0.0]], "float32")
    got = _logits(MarginLoss(scale=4.0, m2=0.5), [0, 1], cos)
    want = 4.0 * cos.astype(np.float64)
    want[0, 0] = 4.0 * math.cos(math.acos(0.8) + 0.5)
    want[1, 1] = 4.0 * math.cos(math.acos(0.6) + 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_arcface_falls_back_where_the_angle_passes_pi():
    # cos θ = -0.95: θ = 2.82 rad, θ + 0.5 > π; the logit is cos θ − m·sin(m).
    cos = np.array([[-0.95, 0.3]], "float32")
    got = _logits(MarginLoss(scale=2.0, m2=0.5), [0], cos)
    assert math.acos(-0.95) + 0.5 > math.pi
    np.testing.assert_allclose(got[0, 0], 2.0 * (-0.95 - 0.5 * math.sin(0.5)), rtol=1e-5)
    np.testing.assert_allclose(got[0, 1], 2.0 * 0.3, rtol=1e-6)


def test_cosface_and_combined_margins():
    cos = np.array([[0.5, 0.4]], "float32")
    np.testing.assert_allclose(
        _logits(MarginLoss(scale=10.0, m3=0.35), [1], cos), [[5.0, 10.0 * (0.4 - 0.35)]], rtol=1e-5
    )
    combined = _logits(MarginLoss(scale=3.0, m1=1.0, m2=0.3, m3=0.2), [0], cos)
    np.testing.assert_allclose(
        combined, [[3.0 * (math.cos(math.acos(0.5) + 0.3) - 0.2), 3.0 * 0.4]], rtol=1e-5
    )
    # No margin: the normalised softmax.
    np.testing.assert_allclose(_logits(MarginLoss(scale=3.0), [0], cos), [[1.5, 1.2]], rtol=1e-6)


def test_margin_loss_is_the_cross_entropy_of_its_logits():
    cos = np.array([[0.7, 0.2, -0.1]], "float32")
    loss = MarginLoss(scale=5.0, m2=0.5)
    logits = _logits(loss, [0], cos)[0]
    want = -logits[0] + np.log(np.exp(logits).sum())
    assert float(loss(np.array([0]), cos)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="scale > 0"):
        MarginLoss(scale=0.0)


def test_margin_loss_of_an_ensemble_is_the_mean_of_its_members_losses():
    # (batch, members, classes): each member's cosines against the same labels.
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (4, 3, 5)).astype("float32")
    labels = np.array([0, 3, 1, 4])
    loss = MarginLoss(scale=5.0, m2=0.5, reduction=None)
    got = keras.ops.convert_to_numpy(loss(labels, cos))
    each = [keras.ops.convert_to_numpy(loss(labels, cos[:, k])) for k in range(3)]
    np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5)
    assert got.shape == (4,)


def test_cosine_logits_are_cosines_to_the_class_centres():
    layer = CosineLogits(3)
    x = np.array([[3.0, 4.0], [-1.0, 0.0]], "float32")
    got = keras.ops.convert_to_numpy(layer(x))
    w = keras.ops.convert_to_numpy(layer.centres)
    want = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(got).max() <= 1.0 + 1e-6


def test_within_class_whitening_whitens_the_shrunk_within_class_covariance():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (20, 6))
    spread = np.array([4.0, 1.0, 1.0, 0.5, 0.5, 0.25])  # one person varies most along axis 0
    labels = np.repeat(np.arange(20), 15)
    vectors = centres[labels] + rng.normal(0, 1, (300, 6)) * spread
    mean, matrix = faces.within_class_whitening(vectors, labels)
    np.testing.assert_allclose(mean, vectors.mean(0), rtol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)
    within = vectors - np.stack([vectors[labels == c].mean(0) for c in labels])
    sigma = LedoitWolf(assume_centered=True).fit(within).covariance_
    scale = np.trace(sigma) / 6  # c² of M Σ M = c²·I
    np.testing.assert_allclose(matrix @ sigma @ matrix, scale * np.eye(6), atol=1e-4 * scale)
    # Mapped, the within-class spread is about the same along every axis.
    mapped = (vectors - mean) @ matrix
    spreads = (mapped - np.stack([mapped[labels == c].mean(0) for c in labels])).std(0)
    assert spreads.max() / spreads.min() < 1.3, spreads
    with pytest.raises(ZooError, match="two or more training images that differ"):
        faces.within_class_whitening(np.ones((6, 4)), np.array([0, 0, 1, 1, 2, 2]))


def test_fold_whitening_makes_the_head_whiten_its_vectors(tmp_path):
    from zoo.heads import embedding

    backbone = zoo.backbone("resnet20", input_shape=(16, 16, 1))
    model = embedding(backbone, 8)
    bn = model.get_layer("head_bn")
    rng = np.random.default_rng(0)
    bn.set_weights(
        [rng.uniform(0.5, 2, 8), rng.normal(0, 1, 8), rng.normal(0, 1, 8), rng.uniform(0.5, 2, 8)]
    )
    x = rng.uniform(0, 1, (5, 16, 16, 1)).astype("float32")
    [before], labels = faces.head_vectors(model, [(x, np.zeros(5))])
    assert before.shape == (5, 8) and (labels == 0).all()
    mean, matrix = rng.normal(0, 1, 8), rng.normal(0, 1, (8, 8))
    faces.fold_whitening(model, mean, matrix)
    [after], _ = faces.head_vectors(model, [(x, np.zeros(5))])
    want = (before - mean) @ matrix
    np.testing.assert_allclose(after, want, atol=1e-4 * np.abs(want).max())
    # The model's output is the whitened vector, normalised; the same once saved and loaded.
    unit = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), unit, atol=1e-4)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), unit, atol=1e-4)


def _tan_triggs_reference(image, inner, outer, gamma=0.2, alpha=0.1, tau=10.0):
    """Tan and Triggs' steps on one greyscale image in [0, 1], with scipy's Gaussian filters
    (mirrored at the borders), and the layer's removal of the band-pass's mean."""
    from scipy.ndimage import gaussian_filter

    x = (image + 1e-3) ** gamma
    x = gaussian_filter(x, inner, mode="mirror") - gaussian_filter(x, outer, mode="mirror")
    x = x - x.mean()
    x = x / np.mean(np.abs(x) ** alpha) ** (1 / alpha)
    x = x / np.mean(np.minimum(tau, np.abs(x)) ** alpha) ** (1 / alpha)
    return 0.5 + 0.5 * np.tanh(x / tau)


def test_tan_triggs_normalises_each_face_for_lighting():
    from zoo.layers import TanTriggs

    files = sorted((Path(shared_data("att_faces")) / "s15").glob("*.pgm"))[:4]
    faces_ = np.stack([np.asarray(Image.open(f), np.float64) / 255 for f in files])[..., None]
    layer = TanTriggs(sigma_inner=0.8, sigma_outer=1.6)
    out = keras.ops.convert_to_numpy(layer(faces_.astype("float32")))
    assert out.shape == faces_.shape and out.dtype == np.float32
    for got, image in zip(out, faces_, strict=True):
        np.testing.assert_allclose(
            got[..., 0], _tan_triggs_reference(image[..., 0], 0.8, 1.6), atol=2e-4
        )
    # The same face under a dimmer light (a gain of 0.4) and on a constant shift of the
    # background's level comes out nearly the same; a flat image is 0.5 everywhere.
    dim = keras.ops.convert_to_numpy(layer((faces_ * 0.4).astype("float32")))
    assert np.abs(dim - out).mean() < 0.01 < np.abs(faces_ * 0.4 - faces_).mean()
    flat = keras.ops.convert_to_numpy(layer(np.full((1, 20, 18, 1), 0.3, "float32")))
    np.testing.assert_allclose(flat, 0.5, atol=1e-6)
    # Each channel alone; the configuration comes back; sigmas out of order are refused.
    rgb = keras.ops.convert_to_numpy(layer(np.repeat(faces_, 3, -1).astype("float32")))
    np.testing.assert_allclose(rgb[..., 2], out[..., 0], atol=1e-4)
    clone = TanTriggs.from_config(layer.get_config())
    assert (clone.sigma_inner, clone.sigma_outer, clone.gamma) == (0.8, 1.6, 0.2)
    with pytest.raises(ValueError, match="0 <= sigma_inner < sigma_outer"):
        TanTriggs(sigma_inner=2.0, sigma_outer=1.0)


def test_an_ensemble_member_sees_tan_triggs_and_is_whitened_through_it(tmp_path):
    """model.head.ensemble = ["pixels", "tan_triggs"]: the second net is TanTriggs then a
    ResNet-20; its head's vectors (read through the TanTriggs) whiten as the first's do, and
    the model saves and loads with it."""
    from zoo.backbones.weights import sublayers
    from zoo.layers import TanTriggs
    from zoo.training import _set_trainable, build_model

    recipe = load_recipe(
        "arcface_att_faces",
        [
            "data.image_size=[24, 20]",
            'model.head.ensemble=["pixels", "tan_triggs"]',
            "model.head.tan_triggs_sigmas=[0.5, 1.0]",
            "phases=[{epochs=1}, {epochs=1, freeze_batchnorm=true}]",
        ],
    )
    model = build_model(recipe, classes=4)
    before, members = faces._heads(model)
    assert [m.name for m in members] == ["resnet20_0", "resnet20_1"]
    tt = [layer for layer in sublayers(members[1]) if isinstance(layer, TanTriggs)]
    assert len(tt) == 1 and (tt[0].sigma_inner, tt[0].sigma_outer) == (0.5, 1.0)
    assert not any(isinstance(layer, TanTriggs) for layer in sublayers(members[0]))
    assert tuple(faces.trainer(recipe, model, 4).output.shape) == (None, 2, 4)
    # freeze_batchnorm reaches the net behind the TanTriggs.
    _set_trainable(recipe, model.get_layer("resnet20_x2"), recipe.phases[1])
    norms = [n for n in sublayers(members[1]) if isinstance(n, keras.layers.BatchNormalization)]
    assert norms and not any(n.trainable for n in norms)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (12, 24, 20, 1)).astype("float32")
    labels = np.repeat(np.arange(4), 3)
    vectors, _ = faces.head_vectors(model, [(x, labels)])
    for net, member in zip(members, vectors, strict=True):
        faces.fold_whitening(net, *faces.within_class_whitening(member, labels))
    for vectors in faces.head_vectors(model, [(x, labels)])[0]:
        assert np.linalg.norm(vectors.mean(0)) < 1e-3 * np.linalg.norm(vectors, axis=1).mean()
    # The TanTriggs net's vectors are those of the net on TanTriggs' images.
    pre = keras.ops.convert_to_numpy(before[0](x))
    inner, core = faces._head(members[1])
    assert [layer.name for layer in inner] == ["resnet20_1_tan_triggs"]
    assert core.name == "resnet20_1_net"
    head = keras.Model(core.input, core.get_layer("head_bn").output)
    direct = head.predict(keras.ops.convert_to_numpy(inner[0](pre)), verbose=0)
    np.testing.assert_allclose(faces.head_vectors(model, [(x, labels)])[0][1], direct, atol=1e-4)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_part_members_see_their_rows_and_whiten_and_save(tmp_path):
    """model.head.ensemble = ["pixels", "upper", "lower"]: the part nets are a Cropping2D of
    their rows (0-56%, 44-100% of 25) then a ResNet-20 built for that size; their vectors are
    the net's on the cropped image, they whiten, and the model saves and loads."""
    from zoo.training import build_model

    recipe = load_recipe(
        "arcface_att_faces",
        ["data.image_size=[25, 20]", 'model.head.ensemble=["pixels", "upper", "lower"]'],
    )
    model = build_model(recipe, classes=4)
    before, members = faces._heads(model)
    assert [m.name for m in members] == ["resnet20_0", "resnet20_1", "resnet20_2"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (12, 25, 20, 1)).astype("float32")
    labels = np.repeat(np.arange(4), 3)
    pre = keras.ops.convert_to_numpy(before[0](x))
    vectors = faces.head_vectors(model, [(x, labels)])[0]
    for member, rows, got in zip(members[1:], (slice(0, 14), slice(11, 25)), vectors[1:]):
        inner, core = faces._head(member)
        assert [layer.name for layer in inner] == [
            f"{member.name}_{'upper' if rows.start == 0 else 'lower'}"
        ]
        assert tuple(core.input.shape) == (None, rows.stop - rows.start, 20, 1)
        head = keras.Model(core.input, core.get_layer("head_bn").output)
        np.testing.assert_allclose(got, head.predict(pre[:, rows], verbose=0), atol=1e-4)
    for net, member in zip(members, vectors, strict=True):
        faces.fold_whitening(net, *faces.within_class_whitening(member, labels))
    for whitened in faces.head_vectors(model, [(x, labels)])[0]:
        assert np.linalg.norm(whitened.mean(0)) < 1e-3 * np.linalg.norm(whitened, axis=1).mean()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_ensemble_weights_weigh_the_members_cosines():
    """model.head.ensemble_weights {tan_triggs = 3} over a pixel net and a TanTriggs net: the
    model's cosine of two images is the members' cosines averaged with weights 1 and 3."""
    from zoo.training import build_model

    recipe = load_recipe(
        "arcface_att_faces",
        ["data.image_size=[16, 14]", 'model.head.ensemble=["pixels", "tan_triggs"]'],
    )
    model = build_model(recipe, classes=4)
    before, members = faces._heads(model)
    assert len(members) == 2
    x = np.random.default_rng(0).uniform(0, 255, (6, 16, 14, 1)).astype("float32")
    pre = x
    for layer in before:
        pre = layer(pre)
    one, two = (keras.ops.convert_to_numpy(m(pre)) for m in members)
    joined = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1.0, rtol=1e-5)
    cosines = joined[:3] @ joined[3:].T
    weighted = ((one[:3] @ one[3:].T) + 3 * (two[:3] @ two[3:].T)) / 4
    np.testing.assert_allclose(cosines, weighted, atol=1e-5)
    # The members' vectors times the roots of 1/2 and 3/2 (weights scaled to sum to 2).
    expected = np.concatenate([one * np.sqrt(0.5), two * np.sqrt(1.5)], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(joined, expected, atol=1e-5)


def test_default_scale_and_margins():
    head = faces.Head()
    assert faces.scale(head, 30) == 16.0
    assert faces.scale(head, 100_001) == pytest.approx(math.sqrt(2) * math.log(100_000))
    assert faces.scale(faces.Head(scale=16.0), 30) == 16.0
    assert faces.margins(head, "cosface") == (1.0, 0.0, 0.35)
    assert faces.margins(faces.Head(margin=0.3), "arcface") == (1.0, 0.3, 0.0)


# ---------------------------------------------------------------------------------------------
# Verification metrics on fixed scores


def test_pairs_counts_and_sampling():
    labels = np.array([0, 0, 1, 1, 2, 2])
    first, second, genuine = verification.pairs(labels, 10_000, 0)
    assert genuine.sum() == 3 and (~genuine).sum() == 12
    assert np.all(labels[first[genuine]] == labels[second[genuine]])
    _, _, sampled = verification.pairs(labels, 5, 0)
    assert sampled.sum() == 3 and (~sampled).sum() == 5


def test_roc_auc_eer_and_tar_match_scikit_learn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    genuine = np.r_[np.ones(200, bool), np.zeros(2000, bool)]
    scores = np.where(genuine, rng.normal(0.6, 0.15, 2200), rng.normal(0.1, 0.15, 2200))
    embeddings_free = verification  # the functions below take scores directly
    fpr, tpr, thr = roc_curve(genuine, scores, drop_intermediate=False)
    threshold, tar = embeddings_free.threshold_at_far(scores, genuine, 0.01)
    assert np.mean(scores[~genuine] >= threshold) <= 0.01
    # The lowest such threshold: one step lower lets more than 1% of impostors through.
    lower = scores[scores < threshold].max()
    assert np.mean(scores[~genuine] >= lower) > 0.01
    assert tar == pytest.approx(np.mean(scores[genuine] >= threshold))
    assert tar == pytest.approx(tpr[fpr <= 0.01].max())
    eer = verification.equal_error_rate(scores, genuine)
    k = np.argmin(np.abs(fpr - (1 - tpr)))
    assert eer == pytest.approx((fpr[k] + 1 - tpr[k]) / 2)
    assert 0.02 < eer < 0.1
    assert roc_auc_score(genuine, scores) > 0.97


def test_threshold_at_far_on_hand_made_scores():
    # Impostors 0.1 .. 1.0 (10): at FAR 0.1 one may pass: the threshold is the top one, 1.0.
    impostor = np.linspace(0.1, 1.0, 10)
    genuine_scores = np.array([0.95, 0.5])
    scores = np.r_[genuine_scores, impostor]
    genuine = np.r_[True, True, np.zeros(10, bool)]
    threshold, tar = verification.threshold_at_far(scores, genuine, 0.1)
    assert threshold == pytest.approx(0.95) and tar == 0.5
    # At FAR 0.05 none may pass: above every impostor, so no genuine pair either.
    threshold, tar = verification.threshold_at_far(scores, genuine, 0.05)
    assert threshold > 1.0 and tar == 0.0


def test_best_threshold_and_ten_fold_accuracy():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    genuine = np.array([False, False, False, True, True, True])
    threshold, accuracy = verification.best_threshold(scores, genuine)
    assert 0.3 < threshold < 0.7 and accuracy == 1.0
    rng = np.random.default_rng(1)
    g = np.r_[np.ones(100, bool), np.zeros(400, bool)]
    s = np.where(g, rng.uniform(0.5, 1, 500), rng.uniform(0, 0.5, 500))
    mean, spread, used = verification.verification_accuracy(s, g, seed=0)
    assert mean == 1.0 and spread == 0.0 and used == 200  # balanced: 100 + 100
    s_noisy = np.where(g, rng.normal(0.6, 0.2, 500), rng.normal(0.4, 0.2, 500))
    mean, _, _ = verification.verification_accuracy(s_noisy, g, seed=0)
    assert 0.6 < mean < 0.85


def test_identity_errors_count_each_identitys_rejected_and_accepted_pairs():
    # Three identities: a (images 0-2), b (3, 4), c (5). Threshold 0.5.
    labels = np.array([0, 0, 0, 1, 1, 2])
    first, second = np.triu_indices(6, k=1)
    genuine = labels[first] == labels[second]
    s = np.zeros(len(first))
    pair = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(first, second))}
    for i, j in [(0, 1), (3, 4)]:  # accepted genuine pairs; a's (0, 2), (1, 2) rejected
        s[pair[i, j]] = 0.9
    for i, j in [(0, 5), (1, 5), (2, 3)]:  # accepted impostors: a with c twice, a with b once
        s[pair[i, j]] = 0.7
    rows = verification.identity_errors(s, genuine, first, second, labels, ["a", "b", "c"], 0.5)
    assert [r["identity"] for r in rows] == ["a", "c", "b"]  # 2 + 3, 2, 1 errors
    a, c, b = rows
    assert (a["images"], a["genuine_pairs"], a["rejected"]) == (3, 3, 2)
    assert (a["impostor_pairs"], a["accepted"]) == (9, 3)
    assert (a["accepted_most_with"], a["accepted_with_it"]) == ("c", 2)
    assert (b["genuine_pairs"], b["rejected"], b["impostor_pairs"], b["accepted"]) == (1, 0, 8, 1)
    assert (b["accepted_most_with"], b["accepted_with_it"]) == ("a", 1)
    counts = ("genuine_pairs", "rejected", "impostor_pairs", "accepted", "accepted_most_with")
    assert [c[k] for k in counts] == [0, 0, 5, 2, "a"]
    # Only what the split's pairs hold is counted (a sample of the impostor pairs).
    keep = genuine | (s > 0)  # the genuine pairs and the accepted impostor pairs
    rows = verification.identity_errors(
        s[keep], genuine[keep], first[keep], second[keep], labels, ["a", "b", "c"], 0.5
    )
    assert [(r["identity"], r["impostor_pairs"]) for r in rows] == [("a", 3), ("c", 2), ("b", 1)]


def test_identities_tsv_keeps_any_folder_name_in_its_cell(tmp_path):
    labels = np.array([0, 0, 1, 1])
    first, second = np.triu_indices(4, k=1)
    genuine = labels[first] == labels[second]
    s = np.array([0.1, 0.9, 0.9, 0.1, 0.1, 0.9])  # (0, 1) rejected; two impostor pairs accepted
    names = ["Ann\tLee", 'Bo "B" Ray']
    rows = verification.identity_errors(s, genuine, first, second, labels, names, 0.5)
    verification.write_identity_errors(tmp_path / verification.IDENTITIES, rows)
    assert verification.most_errors(tmp_path) == [
        "Ann\tLee (1 of 1 genuine pairs rejected, 2 impostor pairs accepted)",
        'Bo "B" Ray (0 of 1 genuine pairs rejected, 2 impostor pairs accepted)',
    ]


def test_identification_rank1_on_made_up_embeddings():
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.6]], "float32")
    labels = np.array([0, 0, 1, 1, 1])
    # Gallery: images 0 and 2; probes 1 (-> 0, right), 3 (-> 1, right), 4 (-> 0, wrong).
    accuracy, probes = verification.identification(e, labels)
    assert probes == 3 and accuracy == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# Identity split and recipe rules


def test_identity_split_by_name_count_and_fraction():
    names = [f"s{k}" for k in range(1, 11)]
    train, held = identity_split(names, ["s3", "s7"], 0)
    assert held == ["s3", "s7"] and len(train) == 8 and not set(train) & set(held)
    train, held = identity_split(names, 4, 0)
    assert len(held) == 4 and sorted(train + held) == sorted(names)
    assert identity_split(names, 4, 0) == (train, held)  # seeded
    assert identity_split(names, 4, 1) != (train, held)
    assert len(identity_split(names, 0.3, 0)[1]) == 3
    with pytest.raises(ZooError, match="'s99', not identities"):
        identity_split(names, ["s1", "s99"], 0)
    with pytest.raises(ZooError, match="at most 8"):
        identity_split(names, 9, 0)


def test_identity_split_never_leaks_a_file(tmp_path):
    path = shared_data("att_faces")
    recipe = load_recipe("arcface_att_faces", [f"data.path='{path}'", "data.eval_identities=12"])
    (train_files, _), (eval_files, _), train_names, eval_names = image_folder.identity_files(
        recipe.data, path, image_folder.class_folders(path), 42
    )
    train_folders = {f.split("/")[-2] for f in train_files}
    eval_folders = {f.split("/")[-2] for f in eval_files}
    assert train_folders == set(train_names) and eval_folders == set(eval_names)
    assert not train_folders & eval_folders
    assert len(eval_names) == 12 and len(train_names) == 28
    assert len(eval_files) == 120 and len(train_files) == 280


def test_identity_folders_without_images_and_unreadable_files(tmp_path):
    rng = np.random.default_rng(0)
    for person in ("a", "b", "c", "d"):
        (tmp_path / person).mkdir()
        for k in range(3):
            pixels = rng.integers(0, 255, (20, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / person / f"{k}.png")
    (tmp_path / "b" / "broken.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no faces here")
    overrides = [f"data.path='{tmp_path}'", "data.eval_identities=['a', 'b']"]
    recipe = load_recipe("arcface_att_faces", [*overrides, "data.skip_corrupt=true"])
    with pytest.raises(ZooError, match=r"1 identity folder\(s\) in .* hold no image files: empty"):
        image_folder.load(recipe.data, "labels", 0)
    (tmp_path / "empty" / "notes.txt").unlink()
    (tmp_path / "empty").rmdir()
    source = image_folder.load(recipe.data, "labels", 0)
    assert source.skipped == (str(tmp_path / "b" / "broken.png"),)
    assert source.class_names == ["c", "d"] and source.eval_class_names == ["a", "b"]
    assert source.train.count == 6 and source.eval.count == 6
    with pytest.raises(ZooError, match="broken.png: not an image"):
        image_folder.load(load_recipe("arcface_att_faces", overrides).data, "labels", 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.eval_identities=[]"], "eval_identities"),
        (['model={name="resnet18"}'], "embedding head over model.backbone"),
        (["compile.loss='dice'"], "not a faces loss"),
        (['phases=[{epochs=1, loss="ce"}]'], r"phases\[0\].loss 'ce' is not a faces loss"),
        (['augment=[{layer="MixUp"}]'], "blends two identities"),
        (["model.head.margins=[1.0, 0.2, 0.1]"], 'go with compile.loss = "combined"'),
        (["model.head.margin=2.0"], "model.head.margin"),
        (["data.source='segmentation_folder'"], "segmentation_masks"),
        (['phases=[{epochs=1, trainable="head"}]'], r"phases\[0\].trainable 'head': .*ensemble"),
        (["model.head.ensemble=0"], "model.head.ensemble"),
        (['model.head.ensemble=["pixels", "rgb"]'], "each one of pixels, tan_triggs"),
        (
            ["data.image_size=[6, 6]", 'model.head.ensemble=["pixels", "lower"]'],
            'a "lower" net sees rows 44%-100% of the image, fewer than 4',
        ),
        (["model.head.tan_triggs_sigmas=[2.0, 1.0]"], "needs 0 <= inner < outer"),
        (["model.head.ensemble_weights={rgb=2}"], "by their names, each one of pixels"),
        (["model.head.ensemble_weights={upper=0}"], "model.head.ensemble_weights.upper"),
    ],
)
def test_faces_recipe_errors(overrides, message):
    with pytest.raises(ZooError, match=message):
        load_recipe("arcface_att_faces", overrides)


def test_eval_identities_required_for_faces_and_refused_elsewhere(tmp_path):
    from zoo.recipes.loader import builtin_dir

    text = (builtin_dir() / "arcface_att_faces.toml").read_text()
    text = text.replace("eval_identities = 10\n", "")
    (tmp_path / "no_ids.toml").write_text(text)
    with pytest.raises(ZooError, match="set data.eval_identities"):
        load_recipe(str(tmp_path / "no_ids.toml"))
    with pytest.raises(ZooError, match="is for task 'faces'"):
        load_recipe("lenet_digits", ["data.eval_identities=5"])


# ---------------------------------------------------------------------------------------------
# A real run on AT&T faces


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    """The recipe (ArcFace over an ensemble of small ResNets, one seeing TanTriggs' images:
    two here, five in the recipe), trained briefly on 30 AT&T identities, 10 held out."""
    path = shared_data("att_faces")
    recipe = load_recipe(
        "arcface_att_faces",
        [
            f"data.path='{path}'",
            "data.image_size=[32, 28]",
            'model.head.ensemble=["pixels", "tan_triggs"]',
            'phases=[{epochs=2, loss="softmax"}, {epochs=3}]',
            "fit.verbose=0",
        ],
    )
    out = tmp_path_factory.mktemp("faces") / "run"
    return zoo.train(recipe, output=out, log=lambda *a, **k: None)


def test_faces_run_verifies_unseen_identities(faces_run):
    metrics = json.loads((faces_run / "metrics.json").read_text())
    assert metrics["eval_identities"] == 10 and metrics["eval_examples"] == 100
    assert metrics["genuine_pairs"] == 10 * 45 and metrics["impostor_pairs"] == 4500
    # Chance is 0.5: a short run on identities it never saw is far above it.
    assert metrics["roc_auc"] > 0.8, metrics
    assert metrics["eer"] < 0.3
    assert 0 <= metrics["far_at_threshold"] <= 0.01
    assert "tar_at_far_0.01" in metrics and "tar_at_far_0.001" in metrics
    assert metrics["identification_rank1"] > 0.5
    for name in ("roc.png", "similarities.png", "curves.png", "verification.json"):
        assert (faces_run / name).is_file(), name
    # Each eval identity's errors at the calibrated threshold, most first.
    header, *rows = [
        line.split("\t") for line in (faces_run / "identities.tsv").read_text().splitlines()
    ]
    assert header[:6] == [
        "identity",
        "images",
        "genuine_pairs",
        "rejected",
        "impostor_pairs",
        "accepted",
    ]
    assert sorted(r[0] for r in rows) == sorted(metrics["eval_identity_names"])
    assert all(r[1:3] == ["10", "45"] and r[4] == "900" for r in rows)
    rejected = sum(int(r[3]) for r in rows)
    assert rejected == round((1 - metrics["tar_at_threshold"]) * metrics["genuine_pairs"])
    accepted = sum(int(r[5]) for r in rows)  # each accepted impostor pair counts for both
    assert accepted == 2 * round(metrics["far_at_threshold"] * metrics["impostor_pairs"])
    errors = [int(r[3]) + int(r[5]) for r in rows]
    assert errors == sorted(errors, reverse=True)
    shown = verification.most_errors(faces_run)
    assert 1 <= len(shown) <= 3 and shown[0].startswith(
        f"{rows[0][0]} ({rows[0][3]} of 45 genuine pairs rejected, {rows[0][5]} impostor"
    )
    # No best checkpoint: without validation, the best epoch by training loss is no choice.
    assert not (faces_run / rundir.BEST).exists()
    saved = json.loads((faces_run / "verification.json").read_text())
    assert saved["threshold"] == metrics["threshold"] and saved["embedding_dim"] == 2 * 128
    # The saved model is the embedding model: image in, unit vector out; the two members'
    # embeddings joined, the TanTriggs net's weighed 3 (the recipe's ensemble_weights), so its
    # cosine is their cosines' mean with weights 1 and 3.
    model = keras.saving.load_model(faces_run / "model.keras")
    assert len(model.inputs) == 1 and tuple(model.output.shape) == (None, 2 * 128)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 28, 1)).astype("float32")
    joined = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1, rtol=1e-5)
    before, members = faces._heads(model)
    assert [m.name for m in members] == ["resnet20_0", "resnet20_1"]
    pre = x
    for layer in before:
        pre = keras.ops.convert_to_numpy(layer(pre))
    each = [m.predict(pre, verbose=0) for m in members]
    weighed = np.concatenate([each[0] * np.sqrt(0.5), each[1] * np.sqrt(1.5)], 1) / np.sqrt(2)
    np.testing.assert_allclose(joined, weighed, atol=1e-5)
    assert np.abs(each[0] - each[1]).max() > 0.1  # they learned apart
    # The recipe whitens each member: its head's vectors (before their normalisation) of the
    # training identities' images (read here with Pillow, as zoo predict reads them) are
    # centred, and their within-class spread is even (a trained net's own has a largest
    # eigenvalue about 14 times the mean; 2.9 whitened).
    from zoo.predict import read_image

    files, labels = image_folder.list_images(Path(shared_data("att_faces")), metrics["classes"])
    images = np.stack([read_image(f, (32, 28, 1)) for f in files])
    each, _ = faces.head_vectors(model, [(images, labels)])
    assert len(each) == 2  # one per member
    for vectors in each:
        assert np.linalg.norm(vectors.mean(0)) < 0.05 * np.linalg.norm(vectors, axis=1).mean()
        within = vectors - np.stack([vectors[labels == c].mean(0) for c in labels])
        spread = np.linalg.eigvalsh(np.cov(within.T))
        assert spread.max() / spread.mean() < 5, spread


def test_faces_export_int8_keeps_embeddings_and_auc(faces_run, tmp_path):
    """int8 weights and activations but the TanTriggs, which stays float (its POW and MIRROR_PAD
    take float tensors), as a full-integer model could not: that one is refused."""
    # This net, trained 5 epochs at 32x28, keeps a mean cosine near the default tolerance 0.98
    # in int8 (0.972 in one CI run, above 0.98 in others, as its training rounds), which the
    # recipe's own run clears (0.9935, runtime.seed 44; ROC AUC 0.9977 both): set for it here.
    report = zoo.export(faces_run, format="tflite", quantize="int8", tolerance=0.95)
    assert report["task"] == "faces" and report["agreement"] == "mean_cosine"
    assert report["tolerance"] == 0.95
    assert report["mean_cosine"] >= 0.95 and report["mean_cosine"] >= report["min_cosine"] > 0.9
    assert abs(report["export_roc_auc"] - report["keras_roc_auc"]) <= 0.01
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=report["path"])
    kinds = {}
    for op in interpreter._get_ops_details():
        dtype = interpreter._get_tensor_details(op["inputs"][0], 0)["dtype"]
        kinds.setdefault(op["op_name"], set()).add(np.dtype(dtype).name)
    assert kinds["CONV_2D"] == {"int8"} and kinds["FULLY_CONNECTED"] == {"int8"}
    assert kinds["POW"] == {"float32"} and kinds["MIRROR_PAD"] == {"float32"}
    with pytest.raises(ZooError, match="cannot keep TanTriggs in float"):
        zoo.export(
            faces_run, output=tmp_path / "out", format="tflite", quantize="int8", full_integer=True
        )
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.slow
def test_faces_export_onnx(faces_run):
    report = zoo.export(faces_run, format="onnx")
    assert report["min_cosine"] >= 0.999
    assert report["export_roc_auc"] == pytest.approx(report["keras_roc_auc"], abs=1e-4)


def test_zoo_train_ends_naming_the_identities_with_the_most_errors(faces_run, monkeypatch):
    """zoo-train's last lines for a faces run (the training itself is the fixture's)."""
    from click.testing import CliRunner

    import zoo_cli
    from zoo import training

    monkeypatch.setattr(training, "train", lambda recipe, output, resume: faces_run)
    result = CliRunner().invoke(
        zoo_cli.train_cmd,
        [str(faces_run / "recipe.toml"), "--output", str(faces_run)],
        prog_name="zoo-train",
    )
    assert result.exit_code == 0, result.output
    *_, finished, hardest = result.stdout.strip().splitlines()
    assert finished.startswith(f"zoo: finished {faces_run}: ") and "roc_auc=" in finished
    shown = verification.most_errors(faces_run)
    assert hardest == "zoo: most errors at the threshold (identities.tsv): " + "; ".join(shown)


def test_verify_embed_identify_commands(faces_run, tmp_path):
    path = shared_data("att_faces")
    metrics = json.loads((faces_run / "metrics.json").read_text())
    unseen = metrics["eval_identity_names"]
    assert not set(unseen) & set(metrics["classes"]) and len(unseen) == 10
    a, b, c = path / unseen[0] / "1.pgm", path / unseen[0] / "2.pgm", path / unseen[1] / "1.pgm"
    code, out, err = zoo_cli("verify", str(faces_run), str(a), str(b), "--json")
    assert code == 0, err[-2000:]
    same = json.loads(out)
    saved = json.loads((faces_run / "verification.json").read_text())
    assert same["threshold"] == saved["threshold"] == metrics["threshold"]
    # the operating point: the share of genuine eval pairs the threshold accepts
    assert same["tar_at_threshold"] == saved["tar_at_threshold"] == metrics["tar_at_threshold"]
    assert (
        same["similarity"]
        > json.loads(zoo_cli("verify", str(faces_run), str(a), str(c), "--json")[1])["similarity"]
    )
    code, out, _ = zoo_cli("verify", str(faces_run), str(a), str(b))
    assert code == 0 and ("same" in out or "different" in out)
    assert (
        f"threshold {saved['threshold']:.4f} (FAR {saved['target_far']:g}, "
        f"TAR {saved['tar_at_threshold']:.2f})" in out
    )
    code, out, _ = zoo_cli("embed", str(faces_run), str(a), str(c), "--json")
    rows = json.loads(out)
    assert len(rows) == 2 and len(rows[0]["embedding"]) == 2 * 128  # two members
    assert np.linalg.norm(rows[0]["embedding"]) == pytest.approx(1, abs=1e-5)
    # A gallery of the unseen identities, the probe image left out.
    gallery = tmp_path / "gallery"
    for name in unseen[:5]:
        (gallery / name).mkdir(parents=True)
        for k in range(2, 6):
            Image.open(path / name / f"{k}.pgm").save(gallery / name / f"{k}.png")
    code, out, err = zoo_cli(
        "identify", str(faces_run), str(a), "--gallery", str(gallery), "--json"
    )
    assert code == 0, err[-2000:]
    ranking = json.loads(out)
    assert [m["identity"] for m in ranking["matches"]][:1] == [unseen[0]]
    assert len(ranking["matches"]) == 5 and ranking["matches"][0]["images"] == 4
    # The Python API agrees with the command.
    vectors = zoo.embed(faces_run, [a, c])
    assert float(vectors[0] @ vectors[1]) == pytest.approx(
        zoo.verify(faces_run, a, c)["similarity"], abs=1e-5
    )


def test_the_python_api_loads_a_model_once_while_its_file_stays(faces_run, tmp_path, monkeypatch):
    """zoo.embed and zoo.verify called pair after pair load the model once (a load and a
    trace, seconds each time before), and again once its file is written anew."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(faces_run, run)
    loads = []
    real = rundir.load
    monkeypatch.setattr(rundir, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    path = shared_data("att_faces")
    a, b = path / "s1" / "1.pgm", path / "s1" / "2.pgm"
    first = zoo.embed(run, [a, b])
    for _ in range(3):
        np.testing.assert_array_equal(zoo.embed(run, [a, b]), first)
        assert zoo.verify(run, a, b)["similarity"] == pytest.approx(float(first[0] @ first[1]))
    assert loads == [run]
    keras.saving.load_model(run / "model.keras").save(run / "model.keras")  # written anew
    np.testing.assert_allclose(zoo.embed(run, [a, b]), first, atol=1e-6)
    assert loads == [run, run]


def test_face_commands_refuse_bad_input(faces_run, tmp_path):
    path = shared_data("att_faces")
    code, _, err = zoo_cli(
        "verify", str(faces_run), str(path / "README.md"), str(path / "s1/1.pgm")
    )
    assert code == 2 and "cannot read image" in err and "Traceback" not in err
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    code, _, err = zoo_cli(
        "identify", str(faces_run), str(path / "s1/1.pgm"), "--gallery", str(tmp_path / "empty")
    )
    assert code == 2 and "holds no identities" in err
    code, _, err = zoo_cli(
        "identify", str(faces_run), str(path / "s1/1.pgm"), "--gallery", str(tmp_path / "none")
    )
    assert code == 2 and "is not a folder" in err
    model = tmp_path / "bare.keras"
    keras.saving.load_model(faces_run / "model.keras").save(model)
    code, _, err = zoo_cli("verify", str(model), str(path / "s1/1.pgm"), str(path / "s1/2.pgm"))
    assert code == 2 and "no calibrated threshold" in err
    code, out, _ = zoo_cli(
        "verify", str(model), str(path / "s1/1.pgm"), str(path / "s1/2.pgm"), "--threshold", "0.5"
    )
    assert code == 0 and "threshold 0.5000  " in out and "TAR" not in out


def test_lfw_recipe_splits_tfds_names_by_identity(mock_tfds):
    import tensorflow as tf

    names = [f"person_{k}" for k in range(6)]

    def fake_lfw(self, split, decoders=None, read_config=None, **kwargs):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, (24, 40, 40, 3), dtype=np.uint8)
        labels = [names[k % 6] for k in range(24)]
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    recipe = load_recipe(
        "arcface_resnet50_lfw",
        [
            "model.backbone_weights='none'",
            "data.image_size=[32, 32]",
            "data.batch_size=8",
            "data.eval_identities=['person_1', 'person_4']",
        ],
    )
    with mock_tfds(as_dataset_fn=fake_lfw):
        data = build(recipe)
        assert data.class_names == ["person_0", "person_2", "person_3", "person_5"]
        assert data.eval_class_names == ["person_1", "person_4"]
        assert (data.train_count, data.eval_count) == (16, 8)
        train = np.concatenate([y.numpy() for _, y in data.train]).astype(int)
        held = np.concatenate([y.numpy() for _, y in data.eval]).astype(int)
    assert sorted(np.bincount(train).tolist()) == [4, 4, 4, 4]
    assert np.bincount(held).tolist() == [4, 4]


def test_an_ensemble_is_one_embedding_model_whose_phases_reach_every_member():
    from zoo.training import _set_trainable, build_model

    recipe = load_recipe(
        "arcface_att_faces",
        [
            "data.image_size=[32, 28]",
            "model.head.ensemble=3",
            "phases=[{epochs=1}, {epochs=1, freeze_batchnorm=true}]",
        ],
    )
    model = build_model(recipe, classes=30)
    assert tuple(model.output.shape) == (None, 3 * 128)
    before, members = faces._heads(model)
    assert len(members) == 3 and len(before) == 1  # the rescaling, then the members
    # The training graph: each member's cosines against its own 30 centres.
    trained = faces.trainer(recipe, model, 30)
    assert tuple(trained.output.shape) == (None, 3, 30)
    net = model.get_layer("resnet20_x3")
    _set_trainable(recipe, net, recipe.phases[1])
    norms = [
        [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for m in members
    ]
    assert len({len(n) for n in norms}) == 1 and len(norms[0]) > 3  # the same net three times
    norms = [n for member in norms for n in member]
    assert not any(n.trainable for n in norms)
    _set_trainable(recipe, net, recipe.phases[0])
    assert all(n.trainable for n in norms)
    # Under mixed precision the embedding and the cosines stay float32.
    mixed = build_model(recipe, classes=30, precision="mixed_bfloat16")
    joined = mixed.get_layer("resnet20_x3").get_layer("members")
    assert mixed.output.dtype == "float32" and joined.compute_dtype == "float32"
    assert faces.trainer(recipe, mixed, 30).output.dtype == "float32"


@pytest.mark.slow
def test_faces_run_resumes_with_its_class_centres(tmp_path):
    """A crash in the margin phase: the resumed run starts from the backed-up centres."""
    from tests.test_training import Crash

    path = shared_data("att_faces")
    recipe = load_recipe(
        "arcface_att_faces",
        [
            f"data.path='{path}'",
            "data.image_size=[32, 28]",
            "data.max_per_class=3",
            "data.eval_identities=5",
            "data.batch_size=16",
            "model.head.ensemble=1",
            'phases=[{epochs=1, loss="softmax"}, {epochs=2}]',
            "fit.verbose=0",
        ],
    )
    saved = {}

    class Remember(Crash):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.epoch:
                saved["centres"] = self.model.get_layer("head_centres").get_weights()[0]
            super().on_epoch_begin(epoch, logs)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=out, callbacks=[Remember(2)], log=lambda *a, **k: None)
    restored = {}

    class Restored(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            restored["centres"] = self.model.get_layer("head_centres").get_weights()[0]
            restored["loss"] = self.model.loss.get_config()

    run = zoo.train(
        recipe, output=out, resume=True, callbacks=[Restored()], log=lambda *a, **k: None
    )
    np.testing.assert_array_equal(restored["centres"], saved["centres"])
    assert restored["loss"]["m2"] == 0.5  # the margin phase's loss, not the warm-up's
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["eval_examples"] == 15


@pytest.mark.slow  # a training subprocess (about a minute); make test-all runs it
def test_faces_benchmark_scores_zoo_and_eigenfaces_on_one_draw(tmp_path):
    """benchmarks/faces.py as the README runs it, briefly: a row for the draw with both
    methods' AUC and EER on the named held-out identities, their means and the bar's count."""
    import subprocess
    import sys
    from pathlib import Path

    held_out = ["s2", "s5", "s11", "s17", "s23", "s29", "s31", "s34", "s36", "s40"]
    script = Path(__file__).parents[1] / "benchmarks" / "faces.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(shared_data("att_faces")),
            "--seed",
            "5",
            "--eval-identities",
            ",".join(held_out),
            "--set",
            "data.image_size=[32, 28]",
            "--set",
            'phases=[{epochs=1, loss="softmax"}, {epochs=1}]',
            "--set",
            "model.head.ensemble=1",
            "--keep",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["seed"] == 5 and set(row["zoo"]["held_out"]) == set(held_out)
    metrics = json.loads((tmp_path / "arcface_att_faces-seed5" / "metrics.json").read_text())
    assert row["zoo"]["roc_auc"] == metrics["roc_auc"]
    # Two epochs leave errors: the identities with the most are named under the row.
    assert row["zoo"]["hardest"][0].split()[0] in held_out
    assert f"most errors: {row['zoo']['hardest'][0]}" in done.stdout
    # Eigenfaces on 32x28 pixels of these 10 people: far above chance, short of perfect.
    assert 0.85 < row["eigenfaces"]["roc_auc"] < 1 and 0 < row["eigenfaces"]["eer"] < 0.25
    assert "zoo meets AUC >= 0.98 and EER <= 0.05 on" in done.stdout and "of 1 draws" in done.stdout
