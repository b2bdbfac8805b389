import numpy as np
import pytest

from _detections import detection_eval
from stageprobe.stats import (
    _counts,
    bootstrap_ci,
    bootstrap_map_ci,
    bootstrap_map_cis,
    mde_from_ci,
    mde_multiplier,
    minimum_detectable_effect,
    paired_bootstrap_diff,
    paired_bootstrap_map_diff,
    paired_mde,
    seeded_bootstrap_ci,
    seeded_map_cis,
)


def test_bootstrap_ci_covers_true_mean_in_at_least_90_percent_of_trials() -> None:
    rng = np.random.default_rng(123)
    true_mean = 0.6
    covered = 0
    for trial in range(200):
        # Skewed per-image scores in [0, 1], like IoUs.
        sample = rng.beta(3, 2, size=80)
        ci = bootstrap_ci(sample, n_resamples=1000, seed=trial)
        covered += ci.low <= true_mean <= ci.high
        assert ci.low <= ci.estimate <= ci.high
    assert covered / 200 >= 0.90


def test_bootstrap_ci_can_fail_to_cover_a_wrong_mean() -> None:
    sample = np.random.default_rng(0).beta(3, 2, size=200)
    ci = bootstrap_ci(sample)
    assert not ci.low <= 0.5 <= ci.high


def test_bootstrap_skips_nan_items() -> None:
    ci = bootstrap_ci(np.array([1.0, np.nan, 1.0, 1.0]))
    assert ci.estimate == 1.0 and ci.low == 1.0 and ci.n == 3


def test_paired_diff_detects_a_consistent_small_gain() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 100)
    b = a - 0.02 + rng.normal(0, 0.005, 100)
    paired = paired_bootstrap_diff(a, b)
    assert paired.low > 0
    # Unpaired intervals of a and b overlap heavily; pairing is what resolves the gain.
    ca, cb = bootstrap_ci(a), bootstrap_ci(b)
    assert ca.low < cb.high
    assert paired.estimate == pytest.approx(0.02, abs=0.005)


def test_map_bootstrap_interval_contains_estimate() -> None:
    ev = detection_eval(noise=10, seed=0)
    ci = bootstrap_map_ci(ev, "map_75", n_resamples=300, seed=0)
    assert ci.low <= ci.estimate <= ci.high
    assert 0 < ci.high - ci.low < 0.5


def test_map_cis_from_shared_draws_equal_one_metric_at_a_time() -> None:
    ev = detection_eval(noise=10, seed=1)
    together = bootstrap_map_cis(ev, ["map_50", "map_75", "map_50_95"], n_resamples=200, seed=3)
    for metric, ci in together.items():
        assert ci == bootstrap_map_ci(ev, metric, n_resamples=200, seed=3)
    # the estimate is COCOeval's own number
    assert together["map_75"].estimate == ev.summary()["map_75"]


def test_paired_map_diff_sees_better_predictions() -> None:
    good, bad = detection_eval(noise=3, seed=0), detection_eval(noise=12, seed=0)
    diff = paired_bootstrap_map_diff(good, bad, "map_75", n_resamples=300)
    assert diff.low > 0


def test_mde_multiplier_is_2_8_at_alpha_005_and_80_percent_power() -> None:
    assert mde_multiplier() == pytest.approx(2.8016, abs=1e-3)
    assert minimum_detectable_effect(0.01) == pytest.approx(0.028, abs=1e-4)
    # a 95 % CI of half-width 1.96 SE → SE 1 → MDE 2.80
    assert mde_from_ci(-1.959964, 1.959964) == pytest.approx(2.8016, abs=1e-3)


def _percentile_ci_excludes_zero(draws: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`bootstrap_ci`'s percentile interval for each row of `draws` with the same resample
    multiplicities (shared across rows, which are independent), as one matrix product."""
    means = draws @ counts.T / draws.shape[1]
    low, high = np.quantile(means, [0.025, 0.975], axis=1)
    return (low > 0) | (high < 0)


def test_a_true_effect_equal_to_the_reported_mde_is_detected_in_80_percent_of_runs() -> None:
    n, rng = 2000, np.random.default_rng(7)
    # the reported MDE comes from a run with no effect: paired per-image differences, SD 1
    before = rng.uniform(0, 1, n)
    after = before - rng.normal(0.0, 1.0, n)
    n_paired, mde = paired_mde(before, after, n_resamples=2000, seed=3)
    assert n_paired == n and mde == pytest.approx(2.8 / np.sqrt(n), rel=0.05)
    draws = rng.normal(mde, 1.0, size=(1000, n))  # 1,000 new runs whose true drop is the MDE
    counts = _counts(np.random.default_rng(11), n, 1000)
    detected = _percentile_ci_excludes_zero(draws, counts)
    one = bootstrap_ci(draws[0], n_resamples=1000, seed=11)
    assert detected[0] == (one.low > 0 or one.high < 0)
    assert 0.75 <= detected.mean() <= 0.85
    # the CI half-width, today's "smallest detectable drop", is detected only about half the time
    half = rng.normal(1.96 * mde / mde_multiplier(), 1.0, size=(1000, n))
    assert 0.42 <= _percentile_ci_excludes_zero(half, counts).mean() <= 0.58


def _clips_of_three_photos(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """30 clips from each of 3 photos: scores vary far more between photos than within one."""
    photo_effect = rng.normal(0, 0.1, 3)
    scores = np.concatenate([0.6 + effect + rng.normal(0, 0.03, 30) for effect in photo_effect])
    return scores, [f"photo{k}" for k in range(3) for _ in range(30)]


def test_cluster_bootstrap_over_3_photos_is_wider_than_resampling_clips() -> None:
    scores, photos = _clips_of_three_photos(np.random.default_rng(5))
    clips = bootstrap_ci(scores)
    by_photo = bootstrap_ci(scores, groups=photos)
    assert by_photo.estimate == clips.estimate and by_photo.n == clips.n == 90
    assert (by_photo.n_groups, clips.n_groups) == (3, None)
    assert by_photo.high - by_photo.low > 3 * (clips.high - clips.low)
    # one group per item is the item bootstrap itself
    same = bootstrap_ci(scores, groups=[str(i) for i in range(90)])
    assert same.n_groups == 90 and same.high - same.low == pytest.approx(clips.high - clips.low, rel=0.2)
    paired = paired_bootstrap_diff(scores, scores - 0.05, groups=photos)
    assert paired.estimate == pytest.approx(0.05) and paired.n_groups == 3
    with pytest.raises(ValueError, match="one group per item"):
        bootstrap_ci(scores, groups=photos[:10])


def test_cluster_ci_covers_the_population_mean_where_the_clip_ci_does_not() -> None:
    """Over many draws of 3 photos, the clip-level CI misses the mean photo score far more often."""
    rng = np.random.default_rng(9)
    missed = {"clips": 0, "photos": 0}
    for trial in range(100):
        scores, photos = _clips_of_three_photos(rng)
        by_clip = bootstrap_ci(scores, 300, trial)
        missed["clips"] += not by_clip.low <= 0.6 <= by_clip.high
        by_photo = bootstrap_ci(scores, 300, trial, groups=photos)
        missed["photos"] += not by_photo.low <= 0.6 <= by_photo.high
    assert missed["clips"] >= 60 and missed["photos"] <= missed["clips"] - 30, missed


def test_seeded_ci_combines_seed_and_test_variation() -> None:
    rng = np.random.default_rng(2)
    images = rng.uniform(0.4, 0.8, 60)
    one = seeded_bootstrap_ci([images], 1000, 0)
    assert (one.estimate, one.low, one.high) == pytest.approx(
        tuple(getattr(bootstrap_ci(images, 1000, 0), k) for k in ("estimate", "low", "high")), abs=0.02)
    # seeds that shift every image alike: no image spread resolves it, only resampling seeds shows it
    constant = [np.full(20, v) for v in (0.6, 0.8, 0.7)]
    spread = seeded_bootstrap_ci(constant, 1000, 0)
    assert spread.estimate == pytest.approx(0.7) and spread.low < 0.67 and spread.high > 0.73
    assert spread.low >= 0.6 - 1e-9 and spread.high <= 0.8 + 1e-9
    # both sources together are wider than either alone
    seeds = [images + shift for shift in (-0.05, 0.0, 0.05)]
    both = seeded_bootstrap_ci(seeds, 1000, 0)
    assert both.high - both.low > max(one.high - one.low, 0.0)
    grouped = seeded_bootstrap_ci(seeds, 1000, 0, groups=[i // 20 for i in range(60)])
    assert grouped.n_groups == 3


def test_seeded_map_ci_spans_seeds_that_differ() -> None:
    """Three probe seeds whose detections differ in quality: the estimate is their mean mAP and the
    CI, which resamples seeds as well as images, is wider than one seed's."""
    evaluations = [detection_eval(noise=n, seed=4) for n in (4, 12, 24)]
    seeded = seeded_map_cis(evaluations, ["map_75"], n_resamples=150, seed=0)["map_75"]
    single = bootstrap_map_cis(evaluations[1], ["map_75"], n_resamples=150, seed=0)["map_75"]
    assert seeded.estimate == pytest.approx(np.mean([e.summary()["map_75"] for e in evaluations]))
    assert seeded.low <= seeded.estimate <= seeded.high
    assert seeded.high - seeded.low > single.high - single.low
    grouped = bootstrap_map_cis(evaluations[0], ["map_75"], 150, 0, groups=[i // 10 for i in range(40)])
    assert grouped["map_75"].n_groups == 4
