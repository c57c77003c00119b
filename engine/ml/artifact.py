"""Model artifacts on disk: one folder per version, verified by SHA-256 before use.

    <artifacts_dir>/<version>/
        direction.txt   LightGBM model text, the p(up over horizon) head
        regime.txt      LightGBM model text, the regime head (absent without ground truth)
        model.json      sidecar: features, heads with each file's SHA-256, parameters,
                        data range, metrics, library versions, drift references

Artifacts live beside the database that registers them (`<db folder>/models/`,
unless `ml.artifacts_dir` says otherwise) and the registry records their paths
relative to that folder, so a backup carries both and a restore elsewhere finds
them.

The registry records the sidecar's SHA-256; the sidecar records each head's. A
change to any file breaks one link of that chain, and loading refuses it. Files are
read once and the same bytes are hashed and parsed, so nothing can change between
the check and the use.

Exceptions:

    Exception
     └── ArtifactError   missing, changed or unreadable artifact; never load it
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.db import PROJECT_ROOT, db_path

if TYPE_CHECKING:  # imported where a model is loaded: a CLI verb or a fresh engine never pays it
    import lightgbm as lgb

    from engine.config import MlSettings

log = logging.getLogger(__name__)

SIDECAR = "model.json"
# Where artifacts lived before they moved beside the database; read for migration only.
LEGACY_ARTIFACTS_DIR = PROJECT_ROOT / "var" / "models"


def models_dir(db_file: Path) -> Path:
    """The artifact folder beside a database: `var/cockpit.db` -> `var/models/`."""
    return Path(db_file).parent / "models"


class ArtifactError(Exception):
    """The artifact is missing, changed or unreadable."""


def resolve_artifacts_dir(settings: MlSettings, db: str | Path | None = None) -> Path:
    """`ml.artifacts_dir` if set, else the models folder beside the database."""
    return Path(settings.artifacts_dir) if settings.artifacts_dir else models_dir(db_path(db))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    version: str
    features: tuple[str, ...]
    horizon_bars: int
    direction: lgb.Booster
    regime: lgb.Booster | None
    regime_classes: tuple[str, ...]
    sidecar: dict[str, Any]


def write_artifact(
    artifacts_dir: Path, version: str, sidecar: dict[str, Any], heads: dict[str, str]
) -> tuple[Path, str]:
    """Write the heads and the sidecar; return the sidecar's path and SHA-256.

    The folder appears whole or not at all: it is written under a temporary name
    and renamed, so a crash mid-write leaves no half artifact under a version name.
    """
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    final = artifacts_dir / version
    if final.exists():
        raise ArtifactError(f"artifact {final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=artifacts_dir))
    try:
        entries = {}
        for head, text in heads.items():
            data = text.encode()
            (tmp / f"{head}.txt").write_bytes(data)
            entries[head] = {"file": f"{head}.txt", "sha256": sha256_hex(data)}
        body = json.dumps({**sidecar, "heads": entries}, sort_keys=True, indent=1).encode()
        (tmp / SIDECAR).write_bytes(body)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / SIDECAR, sha256_hex(body)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_artifact(path: str | os.PathLike[str], expected_sha256: str) -> LoadedModel:
    """Load a version after checking every file against the recorded hashes."""
    sidecar_path = Path(path)
    body = _read(sidecar_path)
    actual = sha256_hex(body)
    if actual != expected_sha256:
        raise ArtifactError(
            f"{sidecar_path}: SHA-256 {actual[:12]}… differs from the registry's"
            f" {expected_sha256[:12]}…"
        )
    import lightgbm as lgb

    sidecar: dict[str, Any] = json.loads(body)
    boosters: dict[str, lgb.Booster] = {}
    for head, entry in sidecar["heads"].items():
        file = sidecar_path.parent / entry["file"]
        data = _read(file)
        if sha256_hex(data) != entry["sha256"]:
            raise ArtifactError(f"{file}: SHA-256 differs from the sidecar's")
        try:
            boosters[head] = lgb.Booster(model_str=data.decode())
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{file}: not a LightGBM model ({exc})") from None
    if "direction" not in boosters:
        raise ArtifactError(f"{sidecar_path}: no direction head")
    log.info("loaded model %s from %s", sidecar["version"], sidecar_path)
    return LoadedModel(
        version=sidecar["version"],
        features=tuple(sidecar["features"]),
        horizon_bars=int(sidecar["horizon_bars"]),
        direction=boosters["direction"],
        regime=boosters.get("regime"),
        regime_classes=tuple(sidecar.get("regime_classes", ())),
        sidecar=sidecar,
    )


def verify_artifact(path: str | os.PathLike[str], expected_sha256: str) -> None:
    """Check the hash chain without parsing the models (for promote and rollback)."""
    sidecar_path = Path(path)
    body = _read(sidecar_path)
    if sha256_hex(body) != expected_sha256:
        raise ArtifactError(f"{sidecar_path}: SHA-256 differs from the registry's")
    for entry in json.loads(body)["heads"].values():
        file = sidecar_path.parent / entry["file"]
        if sha256_hex(_read(file)) != entry["sha256"]:
            raise ArtifactError(f"{file}: SHA-256 differs from the sidecar's")
