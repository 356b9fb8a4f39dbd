"""The input files of a rounds run, fingerprinted in RUN_DIR/inputs.json.

A rerun into the same RUN_DIR reuses finished stages by folder, and config.check_same_run
refuses other settings. A file edited or replaced at the same path (a relabeled json, a
retrained --initial-checkpoint, new thresholds) keeps the settings as they were, so the
old stages would be reused for it silently. Each input file's size, mtime and sha256 are
recorded; a rerun hashes a file again only when its size or mtime moved, so a copied or
touched file with the same bytes still resumes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posemum_deploy.artifacts import sha256_file
from posemum_deploy.data.coco import save_json
from posemum_deploy.errors import ConfigError

if TYPE_CHECKING:
    from posemum_deploy.rounds.config import RoundsConfig

INPUTS_FILE = "inputs.json"


def input_files(cfg: RoundsConfig) -> dict[str, str]:
    """The files the run reads, by the option that names them (folders are not hashed:
    an unlabeled folder of millions of images is pinned by the labeler's own listing)."""
    data = cfg.train.data
    kind, _, source = cfg.boxes.partition(":")
    named = {"--labeled": data.labeled, "--val-ann": data.val_ann,
             "--initial-checkpoint": cfg.initial_checkpoint, "--thresholds": cfg.thresholds,
             "--boxes": source if kind in ("gt", "det") else None,
             "pretrained weights": cfg.train.model.pretrained}
    named |= {f"--label-member #{i}": path for i, path in enumerate(cfg.label_members, 1)}
    return {option: path for option, path in named.items() if path and Path(path).is_file()}


def _stat(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint_inputs(cfg: RoundsConfig, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """{option: {path, size, mtime_ns, sha256}} of `cfg`'s input files. Where `old` (the
    fingerprints of an earlier inputs.json) holds the same path with the same size and
    mtime, its hash is taken as it is, so a resumed run does not rehash a large
    checkpoint or json."""
    old = old or {}
    prints = {}
    for option, name in input_files(cfg).items():
        path = Path(name)
        entry = {"path": name, **_stat(path)}
        before = old.get(option, {})
        same_stat = all(before.get(k) == entry[k] for k in ("path", "size", "mtime_ns"))
        entry["sha256"] = before["sha256"] if same_stat and "sha256" in before else sha256_file(path)
        prints[option] = entry
    return prints


def check_same_inputs(cfg: RoundsConfig, run_dir: Path) -> dict[str, Any]:
    """Refuse to resume the run in `run_dir` when a file it read has other bytes now at the
    same path; returns the fingerprints to save once the run goes on. A run made before
    inputs.json existed, or a file named by another path (check_same_run's business), is
    not compared."""
    old = _read(run_dir / INPUTS_FILE)
    now = fingerprint_inputs(cfg, old)
    changed = [f"{e['path']} (given as {option})" for option, e in now.items()
               if option in old and old[option].get("path") == e["path"]
               and old[option].get("sha256") != e["sha256"]]
    if changed:
        raise ConfigError(f"{run_dir}: {'; '.join(changed)} changed since this run used it, "
                          "and its finished stages were made from the old file: pass a new "
                          "--out, or delete that folder to start over")
    return now


def save_inputs(prints: dict[str, Any], run_dir: Path) -> None:
    save_json(prints, run_dir / INPUTS_FILE)  # atomic: a killed run leaves the old record


def _read(saved: Path) -> dict[str, Any]:
    if not saved.is_file():
        return {}
    try:
        data = json.loads(saved.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{saved}: not readable JSON ({err.__class__.__name__}); pass a new "
                          "--out, or delete that folder to start over") from err
    return data if isinstance(data, dict) else {}
