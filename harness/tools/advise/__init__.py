"""``harness advise``: prompting, LoRA or full fine-tuning, decided by the chapter's rules on
measured arms, with the serving cost and the break-even time of training.

* the decision rules are data (``harness/suite/advise_rules.yaml``, read by ``harness.suite.advise``),
  overridable by id;
* ``measure``: per arm of a finished run, quality with paired intervals, format failures, prompt
  cost and training time (``measure_arms``);
* ``economics``: monthly serving cost per arm and the break-even time of training;
* ``decide``: ``advise(measurements, traffic, prices, rules) -> Advice``;
* ``document``: ``advice.json``; ``render``: the terminal view;
* ``arms``: the arms suite that ``harness advise SUITE`` runs when no stored run is named.
"""

from harness.tools.advise.decide import Advice, Reason, advise
from harness.tools.advise.document import advice_from_json, advice_to_json, read_advice, write_advice
from harness.tools.advise.economics import Economics, Prices, Traffic
from harness.tools.advise.measure import ArmMeasure, Measurements, PromptCost, measure_arms
from harness.suite.advise import Rule, default_rules, load_rules

__all__ = [
    "Advice", "ArmMeasure", "Economics", "Measurements", "Prices", "PromptCost", "Reason", "Rule", "Traffic",
    "advice_from_json", "advice_to_json", "advise", "default_rules", "load_rules", "measure_arms",
    "read_advice", "write_advice",
]
