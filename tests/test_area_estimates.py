"""The Olofsson et al. (2014) stratified estimators, checked against hand computations and the paper's
example."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.area_estimates import area_weighted_accuracy, class_areas_ha, estimates

NAMES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
# Olofsson et al. (2014), section 5, Table 8, in this project's layout: rows = REFERENCE, columns = MAP.
# Read down a column, the map stratum sample sizes are 75, 75, 165 and 325 (640 in all), as in the paper.
CONFUSION = np.array([[66, 0, 1, 2],
                      [0, 55, 0, 1],
                      [5, 8, 153, 9],
                      [4, 12, 11, 313]])
PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])  # map area of strata 1-4 in 30 m pixels
MAP_HA = PIXELS * 0.09  # a 30 m pixel is 0.09 ha; total 900,000 ha


def test_olofsson_worked_example_deforestation_by_hand():
    """Deforestation (map stratum 1), by hand from the map-row table (strata i = 1..4, reference j = 1):

    W = (0.02, 0.015, 0.32, 0.645); n_i = (75, 75, 165, 325); n_i1 = (66, 0, 1, 2)
    p_.1 = 0.02*66/75 + 0 + 0.32*1/165 + 0.645*2/325 = 0.0176 + 0.0019394 + 0.0039692 = 0.0235086
    area = 0.0235086 * 900,000 ha = 21,158 ha
    V(p_.1) = 0.02^2*0.88*0.12/74 + 0.32^2*(1/165)(164/165)/164 + 0.645^2*(2/325)(323/325)/324
            = 5.708e-7 + 3.761e-6 + 7.853e-6 = 1.2185e-5;  SE = 0.0034907 -> 3,142 ha; 95 % CI +-6,158 ha
    UA_1 = 66/75 = 0.88, SE = sqrt(0.88*0.12/74) = 0.03778
    PA_1 = 0.0176/0.0235086 = 0.7487, SE 0.1088 (the paper: 0.75 +- 0.21)
    """
    w = [0.02, 0.015, 0.32, 0.645]
    n = [75, 75, 165, 325]
    n_i1 = [66, 0, 1, 2]
    p1 = sum(w[i] * n_i1[i] / n[i] for i in range(4))
    var_p1 = sum(w[i] ** 2 * (n_i1[i] / n[i]) * (1 - n_i1[i] / n[i]) / (n[i] - 1) for i in range(4))
    ua = 66 / 75
    var_ua = ua * (1 - ua) / 74
    pa = w[0] * ua / p1
    others = sum(w[i] ** 2 * (n_i1[i] / n[i]) * (1 - n_i1[i] / n[i]) / (n[i] - 1) for i in (1, 2, 3))
    var_pa = (w[0] ** 2 * (1 - pa) ** 2 * var_ua + pa ** 2 * others) / p1 ** 2
    assert p1 == pytest.approx(0.0235086, abs=1e-7)
    assert p1 * 900_000 == pytest.approx(21_158, abs=1)  # the paper's 21,158 ha
    assert 1.96 * math.sqrt(var_p1) * 900_000 == pytest.approx(6_158, abs=1)  # the paper's +-6,158 ha

    result = area_weighted_accuracy(CONFUSION, MAP_HA, NAMES, interval="wald")
    deforestation = result["classes"]["deforestation"]
    assert deforestation["map_area_ha"] == pytest.approx(18_000)
    assert deforestation["estimated_area_ha"] == pytest.approx(p1 * 900_000, rel=1e-9)
    assert deforestation["area_se_ha"] == pytest.approx(math.sqrt(var_p1) * 900_000, rel=1e-9)
    assert deforestation["area_ci95_ha"] == pytest.approx(1.96 * math.sqrt(var_p1) * 900_000, rel=1e-9)
    assert deforestation["users_accuracy"] == pytest.approx(ua)
    assert deforestation["users_accuracy_se"] == pytest.approx(math.sqrt(var_ua), rel=1e-9)
    assert deforestation["producers_accuracy"] == pytest.approx(pa, rel=1e-9)
    assert deforestation["producers_accuracy"] == pytest.approx(0.7487, abs=1e-4)
    assert deforestation["producers_accuracy_se"] == pytest.approx(math.sqrt(var_pa), rel=1e-9)
    assert deforestation["producers_accuracy_se"] == pytest.approx(0.1088, abs=1e-4)


def test_olofsson_worked_example_all_classes():
    """The paper's reported results (section 5), recomputed by hand to 4 digits:

    area ha (95 % CI):  21,158 (6,158)  11,686 (3,756)  285,770 (15,510)  581,386 (16,282)
    UA (SE):            0.8800 (0.0378) 0.7333 (0.0514) 0.9273 (0.0203)   0.9631 (0.0105)
    PA (SE):            0.7487 (0.1088) 0.8472 (0.1298) 0.9345 (0.0175)   0.9616 (0.0094)
    OA = sum_i W_i n_ii / n_i = 0.02*0.88 + 0.015*55/75 + 0.32*153/165 + 0.645*313/325 = 0.9465
    SE(OA) = sqrt(sum_i W_i^2 UA_i (1 - UA_i) / (n_i - 1)) = 0.00943
    """
    w = [0.02, 0.015, 0.32, 0.645]
    ua_hand = [66 / 75, 55 / 75, 153 / 165, 313 / 325]
    n = [75, 75, 165, 325]
    oa = sum(wi * u for wi, u in zip(w, ua_hand))
    oa_se = math.sqrt(sum(wi ** 2 * u * (1 - u) / (ni - 1) for wi, u, ni in zip(w, ua_hand, n)))
    assert oa == pytest.approx(0.9465, abs=1e-4)

    result = area_weighted_accuracy(CONFUSION, MAP_HA, NAMES, interval="wald")
    assert result["overall_accuracy"] == pytest.approx(oa, rel=1e-9)
    assert result["overall_accuracy_se"] == pytest.approx(oa_se, rel=1e-9)
    assert result["overall_accuracy_se"] == pytest.approx(0.00943, abs=1e-5)
    assert result["overall_accuracy_ci95"] == pytest.approx(1.96 * oa_se, rel=1e-9)
    expected = {"estimated_area_ha": [21_158, 11_686, 285_770, 581_386],
                "area_ci95_ha": [6_158, 3_756, 15_510, 16_282]}
    for key, values in expected.items():
        got = [result["classes"][name][key] for name in NAMES]
        assert got == pytest.approx(values, abs=1)
    for key, values in {"users_accuracy": [0.8800, 0.7333, 0.9273, 0.9631],
                        "users_accuracy_se": [0.0378, 0.0514, 0.0203, 0.0105],
                        "producers_accuracy": [0.7487, 0.8472, 0.9345, 0.9616],
                        "producers_accuracy_se": [0.1088, 0.1298, 0.0175, 0.0094]}.items():
        got = [result["classes"][name][key] for name in NAMES]
        assert got == pytest.approx(values, abs=1e-4), key
    assert sum(result["classes"][name]["estimated_area_ha"] for name in NAMES) == pytest.approx(900_000)
    assert result["total_area_ha"] == pytest.approx(900_000)
    assert result["n_units"] == 640
    json.dumps(result, allow_nan=False)


def test_two_classes_by_hand():
    """Rows reference, columns map: map class a holds 10 samples (9 a, 1 b), map class b 5 (1 a, 4 b).

    Map areas 30 ha and 70 ha: W = (0.3, 0.7).
    p_.a = 0.3*0.9 + 0.7*0.2 = 0.41 -> 41 ha;  V = 0.09*0.9*0.1/9 + 0.49*0.2*0.8/4 = 0.0205 (both classes)
    UA = (0.9, 0.8), SE = (sqrt(0.09/9), sqrt(0.16/4)) = (0.1, 0.2)
    OA = 0.27 + 0.56 = 0.83, V(OA) = 0.0205
    PA_a = 0.27/0.41 = 0.65854, V = (0.09*(1-PA_a)^2*0.01 + PA_a^2*0.0196)/0.41^2 = 0.051189
    PA_b = 0.56/0.59 = 0.94915, V = (0.49*(1-PA_b)^2*0.04 + PA_b^2*0.0009)/0.59^2 = 0.0024748
    """
    result = area_weighted_accuracy(np.array([[9, 1], [1, 4]]), np.array([30.0, 70.0]), ["a", "b"], interval="wald")
    a, b = result["classes"]["a"], result["classes"]["b"]
    assert (a["estimated_area_ha"], b["estimated_area_ha"]) == pytest.approx((41.0, 59.0))
    assert (a["area_se_ha"], b["area_se_ha"]) == pytest.approx((100 * math.sqrt(0.0205),) * 2)
    assert (a["users_accuracy"], a["users_accuracy_se"]) == pytest.approx((0.9, 0.1))
    assert (b["users_accuracy"], b["users_accuracy_se"]) == pytest.approx((0.8, 0.2))
    assert b["users_accuracy_ci95"] == pytest.approx(0.392)
    assert (result["overall_accuracy"], result["overall_accuracy_se"]) == pytest.approx((0.83, math.sqrt(0.0205)))
    assert a["producers_accuracy"] == pytest.approx(0.27 / 0.41)
    assert a["producers_accuracy_se"] == pytest.approx(math.sqrt(0.051189), rel=1e-4)
    assert b["producers_accuracy"] == pytest.approx(0.56 / 0.59)
    assert b["producers_accuracy_se"] == pytest.approx(math.sqrt(0.0024748), rel=1e-4)


def test_block_standard_error_by_hand():
    """A cluster sample of 3 blocks out of M = 10, two classes, map shares W = (0.5, 0.5); pixels per block,
    rows reference, columns map:  block 1 [[8, 0], [2, 10]], block 2 [[4, 2], [0, 4]], block 3 [[6, 0], [0, 2]].

    Within map class a: X_a = 20 px, 18 of reference a: q_aa = 0.9; within b: X_b = 18, 16 of b: q_bb = 8/9.
    OA = 0.5 * 0.9 + 0.5 * 8/9 = 0.894444. Linearized block values z_b = sum_j W_j (y_b,jj - q_jj x_b,j) / X_j:
    z_1 = 0.5 (8 - 9) / 20 + 0.5 (10 - 80/9) / 18 = 0.0058642; z_2 = 0.5 (0.4) / 20 + 0.5 (4 - 48/9) / 18 =
    -0.0270370; z_3 = 0.5 (0.6) / 20 + 0.5 (2 - 16/9) / 18 = 0.0211728 (they sum to 0).
    V = (1 - 3/10) * 3/2 * sum z_b^2 = 1.05 * 0.00121369 = 0.00127437: SE 0.035698 (Cochran 1977 eq. 6.13's
    ratio variance, summed over the map classes' ratios).
    Class a's area share = 0.5 * 0.9 + 0.5 * 2/18 = 0.505556 of 100 ha; its z_b = sum_j W_j (y_b,aj - q_aj x_b,j) / X_j.
    """
    tables = np.array([[[8, 0], [2, 10]], [[4, 2], [0, 4]], [[6, 0], [0, 2]]], float)
    result = estimates(tables, np.zeros(3, int), np.array([10.0]), np.array([50.0, 50.0]), ["a", "b"],
                       map_shares=np.array([0.5, 0.5]), interval="wald")
    z = np.array([0.5 * (8 - 9) / 20 + 0.5 * (10 - 80 / 9) / 18, 0.5 * 0.4 / 20 + 0.5 * (4 - 48 / 9) / 18,
                  0.5 * 0.6 / 20 + 0.5 * (2 - 16 / 9) / 18])
    assert z.sum() == pytest.approx(0, abs=1e-15)
    assert result["overall_accuracy"] == pytest.approx(0.894444, abs=1e-6)
    assert result["overall_accuracy_se"] == pytest.approx(math.sqrt(0.7 * 1.5 * (z ** 2).sum()), rel=1e-12)
    assert result["overall_accuracy_se"] == pytest.approx(0.035698, abs=1e-6)
    za = np.array([0.5 * (8 - 0.9 * 10) / 20 + 0.5 * (0 - 10 / 9) / 18, 0.5 * (4 - 3.6) / 20 + 0.5 * (2 - 6 / 9) / 18,
                   0.5 * (6 - 5.4) / 20 + 0.5 * (0 - 2 / 9) / 18])
    a = result["classes"]["a"]
    assert a["estimated_area_ha"] == pytest.approx(100 * (0.45 + 0.5 / 9))
    assert a["area_se_ha"] == pytest.approx(100 * math.sqrt(1.05 * (za ** 2).sum()), rel=1e-12)
    # a census (every block sampled) has no sampling error; one block alone gives no variance
    census = estimates(tables, np.zeros(3, int), np.array([3.0]), np.array([50.0, 50.0]), ["a", "b"],
                       map_shares=np.array([0.5, 0.5]), interval="wald")
    assert census["overall_accuracy_se"] == 0.0
    single = estimates(tables[:1], np.zeros(1, int), np.array([10.0]), np.array([50.0, 50.0]), ["a", "b"],
                       map_shares=np.array([0.5, 0.5]), interval="wald")
    assert single["overall_accuracy"] is not None and single["overall_accuracy_se"] is None


def test_block_intervals_cover_the_truth_over_repeated_cluster_samples():
    """A synthetic population of 400 blocks whose errors cluster (each block has its own error rate): 95 %
    intervals from 40 blocks drawn at random contain the true overall accuracy and areas about 95 % of the time,
    and the pixel-wise (independent draws) SE would be several times too small."""
    rng = np.random.default_rng(7)
    blocks, pixels = 400, 100
    mapped = rng.integers(0, 2, size=(blocks, pixels))
    wrong = rng.random((blocks, pixels)) < rng.beta(1, 6, size=(blocks, 1))  # block-level error rates
    reference = np.where(wrong, 1 - mapped, mapped)
    population = np.zeros((blocks, 2, 2))
    np.add.at(population, (np.repeat(np.arange(blocks), pixels), reference.ravel(), mapped.ravel()), 1)
    truth_oa = np.trace(population.sum(axis=0)) / population.sum()
    truth_a = population.sum(axis=(0, 2))[0] / population.sum()
    map_area = population.sum(axis=(0, 1))
    hits, width_ratio = np.zeros(2), []
    draws = 400
    for _ in range(draws):
        chosen = rng.choice(blocks, 40, replace=False)
        result = estimates(population[chosen], np.zeros(40, int), np.array([blocks]), map_area, ["a", "b"],
                           map_shares=map_area / map_area.sum(), interval="wald")
        hits[0] += abs(result["overall_accuracy"] - truth_oa) <= result["overall_accuracy_ci95"]
        a = result["classes"]["a"]
        hits[1] += abs(a["estimated_area_ha"] - truth_a * map_area.sum()) <= a["area_ci95_ha"]
        oa = result["overall_accuracy"]
        width_ratio.append(result["overall_accuracy_se"] / math.sqrt(oa * (1 - oa) / (40 * pixels)))
    assert 0.91 <= hits[0] / draws <= 0.98 and 0.91 <= hits[1] / draws <= 0.98, hits / draws
    assert np.median(width_ratio) > 2


def test_undefined_values_are_none_not_nan():
    # Map class c has no samples but covers area: nothing can be estimated (its pixels could be of any class).
    confusion = np.array([[5, 1, 0], [0, 4, 0], [1, 0, 0]])
    result = area_weighted_accuracy(confusion, np.array([10.0, 20.0, 5.0]), ["a", "b", "c"])
    assert result["classes"]["c"]["users_accuracy"] is None
    assert result["classes"]["a"]["users_accuracy"] is None
    assert result["classes"]["a"]["estimated_area_ha"] is None
    assert result["overall_accuracy"] is None
    json.dumps(result, allow_nan=False)
    # Map class c has neither area nor samples: it drops out; its UA is None, its estimated area is real.
    result = area_weighted_accuracy(confusion, np.array([10.0, 20.0, 0.0]), ["a", "b", "c"])
    c = result["classes"]["c"]
    assert c["map_area_ha"] == 0.0 and c["users_accuracy"] is None and c["users_accuracy_se"] is None
    assert c["estimated_area_ha"] == pytest.approx(10.0 * 1 / 6)
    assert result["overall_accuracy"] == pytest.approx((10 * 5 / 6 + 20 * 4 / 5) / 30)
    json.dumps(result, allow_nan=False)
    # A single sample in a stratum: estimates exist, their standard errors do not.
    result = area_weighted_accuracy(np.array([[1, 0], [0, 3]]), np.array([1.0, 1.0]), ["a", "b"])
    assert result["classes"]["a"]["users_accuracy"] == 1.0
    assert result["classes"]["a"]["users_accuracy_se"] is None
    assert result["overall_accuracy_se"] is None
    # Nothing mapped at all.
    result = area_weighted_accuracy(np.zeros((2, 2)), np.zeros(2), ["a", "b"])
    assert result["overall_accuracy"] is None and result["classes"]["a"]["estimated_area_ha"] is None
    json.dumps(result, allow_nan=False)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="3 class names"):
        area_weighted_accuracy(np.eye(2), np.ones(2), ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 class names"):
        estimates(np.ones((2, 2, 2)), np.zeros(2, int), np.ones(1), np.ones(2), ["a", "b", "c"])


def test_class_areas_ha():
    assert class_areas_ha(np.array([1, 10_000]), 100.0).tolist() == [0.01, 100.0]
    assert class_areas_ha(PIXELS, 900.0).sum() == pytest.approx(900_000)
