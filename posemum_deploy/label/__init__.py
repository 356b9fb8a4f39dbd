"""Bulk pseudo-labeling: image folder → resumable JSONL shards → COCO pseudo-labels."""
from __future__ import annotations

from posemum_deploy.label.merge import MergeFilter, merge_labels
from posemum_deploy.label.runner import LabelSettings, LabelSummary, RunSettings, label_folder

__all__ = ["LabelSettings", "LabelSummary", "MergeFilter", "RunSettings", "label_folder",
           "merge_labels"]
