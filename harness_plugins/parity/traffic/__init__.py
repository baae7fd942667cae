"""Traffic shift: is the offline evaluation set still a fair sample of production traffic?

A model can score well offline and badly in production simply because production users ask
about other things, in other languages, at other lengths.  This check compares the texts of the
offline evaluation set (``ctx.offline_set``) with a sample of production requests
(``ctx.requests``), four ways:

1. **length**: token counts (the offline pipeline's tokenizer), a two-sample Kolmogorov-Smirnov
   test, and both medians;
2. **script**: the share of texts written mainly in each Unicode script family (latin,
   cyrillic, cjk, arabic, other), and the total-variation distance between the two shares;
3. **embeddings**: all-MiniLM-L6-v2 sentence embeddings (normalised) and two seeded
   permutation tests on them: a two-sample MMD test (Gaussian kernel, median-heuristic
   bandwidth, unbiased MMD²), sensitive to any difference of the two distributions, and a
   one-sided nearest-neighbour *coverage* test whose statistic is the similarity gap: the mean
   cosine similarity of each offline text to its nearest *other* offline text (what "covered"
   looks like when the traffic is the offline set itself) minus that of each production text to
   its nearest offline text.  MMD alone has little power against a minority of production
   traffic on a new topic (a 20% shift of 150 texts gives p of about 0.01); the coverage test
   catches it.  The embedding test rejects when the Bonferroni-combined p-value
   ``min(1, 2 * min(p_mmd, p_coverage))`` is below ``alpha``;
4. **topic clusters**: seeded KMeans on the production embeddings; a cluster is *not covered*
   when the median, over its members, of the similarity to their nearest offline text is below
   ``coverage_similarity``.  Each cluster comes with its size, that median, three production
   examples (the members nearest its centre) and the offline text nearest its centre.  A
   member of an uncovered cluster that has a close offline example of its own is moved to the
   nearest covered cluster (see ``topic_clusters``), so uncovered traffic is never overstated
   by KMeans lumping a few covered requests in with a new topic.

Findings (all with ``check="traffic_shift"``):

* ``traffic_shift`` when the embedding test rejects at ``alpha`` **and** the shift is material:
  uncovered clusters hold at least ``min_uncovered_share`` of the production requests, or the
  similarity gap is at least ``min_similarity_gap``.  A test alone also flags differences too
  small to matter (with many texts, or when production is a narrower slice of what the offline
  set covers); the effect rule keeps those quiet: when production is drawn from the same data
  as the offline set, every production topic has close offline neighbours (no uncovered
  cluster) and the gap is about zero (within +-0.015 on 150 + 150 customer-support questions).
  Severity ``high`` when uncovered clusters hold at least ``high_uncovered_share`` of the
  traffic, else ``medium``.  ``affected`` is the production requests in uncovered clusters
  (all of them when the gap rule alone fired); the evidence lists each uncovered cluster with
  its examples and its request ids (the first ``MAX_IDS``; ``size`` is always exact).
* ``length_shift`` (low) when the KS test rejects at ``alpha`` and the larger median token
  count is more than ``length_ratio`` times the smaller; ``affected`` is the production
  requests outside the offline 5th-95th percentile range of token counts.
* ``language_shift`` (medium when the distance is at least 0.5, else low) when the
  total-variation distance between the script shares exceeds ``max_script_tv``; ``affected``
  is the production requests in script families that production uses more than offline.

``total`` is always the number of production requests compared (at most ``max_texts``).
The metrics carry every measurement, findings or not.
"""

from __future__ import annotations

import harness
from harness.plugin.registry import Registrar

from .check import MAX_IDS, MIN_TEXTS, NAME, TrafficShift, TrafficShiftConfig
from .measures import (
    SCRIPTS,
    coverage_permutation_test,
    gaussian_kernel,
    mmd_permutation_test,
    nearest_similarities,
    script_of,
    script_shares,
    total_variation,
)

__all__ = [
    "MAX_IDS",
    "MIN_TEXTS",
    "NAME",
    "SCRIPTS",
    "TrafficShift",
    "TrafficShiftConfig",
    "coverage_permutation_test",
    "gaussian_kernel",
    "mmd_permutation_test",
    "nearest_similarities",
    "script_of",
    "script_shares",
    "total_variation",
]


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(TrafficShift)
