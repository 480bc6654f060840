"""Evaluation of decomposer × solver pipelines: the paper's Table 1 protocol, runnable without torch.

``datasets`` reads GSM8K / DROP / Bamboogle / generic JSONL into :class:`~.datasets.Item`; ``metrics``
scores answers the way each data set is scored; ``runner`` runs one results JSONL per pipeline, resumably;
``cost`` turns token counts into dollars; ``report`` writes the Markdown table, paired comparisons and the
accuracy-vs-cost plot; ``cli`` adds ``dod eval``.
"""

from langchain_dod.evaluation.cost import PAPER_RATE, PriceTable, Rate
from langchain_dod.evaluation.datasets import DatasetError, Item, load_dataset, select_items
from langchain_dod.evaluation.oracle import SocraticOracle
from langchain_dod.evaluation.runner import RunSpec, run_evaluation

__all__ = [
    "PAPER_RATE",
    "DatasetError",
    "Item",
    "PriceTable",
    "Rate",
    "RunSpec",
    "SocraticOracle",
    "load_dataset",
    "run_evaluation",
    "select_items",
]
