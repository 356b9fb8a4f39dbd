"""Bulk pseudo-labeling: image folder → resumable JSONL shards → COCO pseudo-labels."""
from __future__ import annotations

from posemum_deploy.label.merge import MergeFilter, merge_labels
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.summary import LabelSummary

__all__ = ["LabelSettings", "LabelSummary", "MergeFilter", "RunSettings", "label_folder",
           "merge_labels"]
