"""The evaluation suite: FID, sFID, IS, precision/recall, KID, Fréchet distance in any feature space,
conditional accuracy on the built-in data, and the cost of sampling (NFE, images/s, latency, memory).

Building blocks work on numpy arrays or tensors; :func:`evaluate` runs them on sample files against
a reference (ADM reference batch ``.npz`` or a dataset spec). See docs/metrics.md.
"""

from genzoo.metrics.cost import CallCounter, Cost, measure_cost, peak_memory
from genzoo.metrics.evaluate import evaluate, frechet_metric, get_extractor, reference_from_dataset, summarize
from genzoo.metrics.reference import Reference, iter_npz_images, load_reference, save_reference
from genzoo.metrics.scores import inception_score, kid, precision_recall
from genzoo.metrics.stats import FeatureStats, frechet_distance, frechet_distance_features, mean_cov


def sfid(mu_s, sigma_s, mu_s_ref, sigma_s_ref) -> float:
    """sFID (Nash et al. 2021): the Fréchet distance of Inception mixed_6/conv spatial features
    (first 7 channels, 17×17×7 = 2023-d, see :class:`genzoo.metrics.inception.InceptionFID`)."""
    return frechet_distance(mu_s, sigma_s, mu_s_ref, sigma_s_ref)


__all__ = ["CallCounter", "Cost", "FeatureStats", "Reference", "evaluate", "frechet_distance",
           "frechet_distance_features", "frechet_metric", "get_extractor", "inception_score",
           "iter_npz_images", "kid", "load_reference", "mean_cov", "measure_cost", "peak_memory",
           "precision_recall", "reference_from_dataset", "save_reference", "sfid", "summarize"]
