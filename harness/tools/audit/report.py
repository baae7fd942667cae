"""What a data audit found, as values: one dataclass per measurement and the ``AuditReport``
that holds them (``to_json`` is ``audit.json``), with the limits the measurements share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.types import Conversation

DEFAULT_CLUSTERS = 12
EXAMPLES = 3
SMALLEST = 3
"""How many of the smallest categories are always listed, flagged or not."""
TOP_GROUPS = 5
"""How many of the largest duplicate groups, hardest records and problem examples are kept."""
MAX_IDS = 10
ROLES = ("system", "user", "assistant")
PROBLEMS = ("empty_turn", "system_not_first", "not_alternating", "no_final_assistant")

LossFn = Callable[[Conversation], float]
EmbedFn = Callable[..., Any]
ProgressFn = Callable[[int, int, str], None]




@dataclass(frozen=True)
class CategoryCount:
    name: str
    count: int
    share: float
    flagged: bool


@dataclass
class CategoryBalance:
    """Counts of each category among the categorised records, largest first."""

    categorised: int
    uncategorised: int
    uniform_share: float
    min_share: float
    counts: list[CategoryCount]
    flagged: list[str]
    """categories whose share is below ``min_share``, smallest first"""
    smallest: list[str]
    """the ``SMALLEST`` smallest categories, smallest first, whether flagged or not"""


@dataclass
class Cluster:
    id: int
    size: int
    share: float
    name: str
    examples: list[str]
    example_ids: list[str]
    under_represented: bool
    top_category: str | None = None
    top_category_share: float | None = None


@dataclass
class Diversity:
    """Topic clusters of the user turns of ``embedded`` of ``eligible`` records."""

    model: str
    embedded: int
    eligible: int
    requested_clusters: int
    seed: int
    mean_size: float
    clusters: list[Cluster]
    under_represented: list[int]


@dataclass(frozen=True)
class DuplicateGroup:
    size: int
    example: str
    source_ids: list[str]


@dataclass
class Duplicates:
    """Groups of records with equal normalised text, for one ``scope``."""

    scope: str
    groups: int
    records_in_groups: int
    """records in groups of more than one (each group's first record included)"""
    redundant: int
    """records beyond the first of each group: what exact dedup would drop"""
    sizes: dict[int, int]
    """group size -> number of groups of that size (sizes > 1)"""
    largest: list[DuplicateGroup]


@dataclass(frozen=True)
class Distribution:
    min: float
    median: float
    p90: float
    max: float


@dataclass
class LengthStats:
    """Length of every turn of one role (``conversation``: of every whole record)."""

    role: str
    turns: int
    chars: Distribution
    tokens: Distribution | None = None


@dataclass
class Difficulty:
    measured: int
    mean: float
    distribution: Distribution
    hardest: list[tuple[str, float]]


@dataclass
class FormatConsistency:
    records: int
    consistent: int
    rate: float
    problems: dict[str, int]
    examples: dict[str, list[str]]


@dataclass
class AuditReport:
    """Everything ``audit`` measured; ``None`` sections were not asked for."""

    source: str
    records: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    format: FormatConsistency
    duplicates: list[Duplicates]
    lengths: list[LengthStats]
    balance: CategoryBalance | None = None
    diversity: Diversity | None = None
    difficulty: Difficulty | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only; ``sizes`` keys become strings, as JSON needs."""
        data = asdict(self)
        for dup in data["duplicates"]:
            dup["sizes"] = {str(k): v for k, v in dup["sizes"].items()}
        if data["difficulty"] is not None:
            data["difficulty"]["hardest"] = [
                {"source_id": sid, "loss": loss} for sid, loss in data["difficulty"]["hardest"]
            ]
        return data
