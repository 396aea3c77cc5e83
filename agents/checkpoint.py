"""Checkpoints: model.safetensors plus config.json, written atomically, loaded without pickle.

A checkpoint holds everything needed to rebuild the policy and its environment: the
network spec, env id, observation shape and dtype, number of actions, package version and
step. Loading never unpickles, and a bad checkpoint is one clear QnormError.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import qnorm
from qnorm import QnormError, build_q_network, spec_from_dict
from qnorm.conv_networks import ConvQNetworkSpec
from qnorm.networks import QNetworkSpec

NetworkSpec = QNetworkSpec | ConvQNetworkSpec

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class Policy:
    """A Q-network rebuilt from a checkpoint, with what it was trained on."""

    network: nn.Module
    spec: NetworkSpec
    env_id: str
    obs_shape: tuple[int, ...]
    obs_dtype: str
    step: int
    metadata: dict
    path: Path


def checkpoint_metadata(
    spec: NetworkSpec,
    env_id: str,
    obs_shape,
    obs_dtype: str,
    step: int,
    train_config: dict,
    target_scheme: str = "target_network",
    evaluation: dict | None = None,
) -> dict:
    """The config.json content of a checkpoint.

    ``evaluation`` is the greedy evaluation of these very weights during training, when the
    checkpoint was written right after one (``{"step", "mean_return", "episodes"}``).
    """
    return {
        "format_version": FORMAT_VERSION,
        "qnorm_version": qnorm.__version__,
        "env_id": env_id,
        "observation_shape": list(obs_shape),
        "observation_dtype": obs_dtype,
        "num_actions": spec.num_actions,
        "norm": spec.norm,
        "network": spec.to_dict(),
        "step": int(step),
        "target_scheme": target_scheme,
        "train_config": train_config,
        "evaluation": evaluation,
    }


def save_checkpoint(directory: str | Path, network: nn.Module, metadata: dict) -> Path:
    """Write the checkpoint to a temporary sibling, then rename it into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a checkpoint is shared output
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(tensors, tmp / MODEL_FILE, metadata={"format": "qnorm"})
        write_json(tmp / CONFIG_FILE, metadata)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(new: Path, final: Path) -> None:
    """Swap ``new`` in at ``final``; an older checkpoint there is removed only afterwards."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint path or a run directory (its final one)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).exists():
        return path
    final = path / "checkpoints" / "final"
    if final.is_dir():
        return final
    if not path.exists():
        raise QnormError(f"no checkpoint or run directory at {path}")
    raise QnormError(f"{path} holds no checkpoint ({MODEL_FILE} and {CONFIG_FILE})")


def read_metadata(directory: Path) -> dict:
    """The checkpoint's config.json, checked for its format version."""
    config_path = directory / CONFIG_FILE
    try:
        metadata = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QnormError(f"checkpoint config {config_path} is unreadable: {exc}") from None
    if not isinstance(metadata, dict) or "format_version" not in metadata:
        raise QnormError(f"{config_path} is not a qnorm checkpoint config")
    version = metadata["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise QnormError(f"{config_path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise QnormError(
            f"checkpoint format version {version} is newer than this qnorm reads "
            f"({FORMAT_VERSION}); upgrade qnorm"
        )
    return metadata


# No policy qnorm trains comes near this; a config.json asking for more is refused before any
# memory is allocated (4 GB of float32 parameters).
MAX_POLICY_ELEMENTS = 1_000_000_000


def check_fits_model_file(spec: NetworkSpec, model_path: Path) -> None:
    """Refuse a spec whose tensors are not those in the safetensors header, or are too large.

    The network is built on torch's meta device (shapes only, no memory) and compared with
    the header, so a config.json that asks for a gigantic network costs nothing to reject.
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_q_network(spec).state_dict().items()}
    elements = sum(math.prod(shape) for shape in expected.values())
    if elements > MAX_POLICY_ELEMENTS:
        raise QnormError(
            f"{model_path.parent / CONFIG_FILE} asks for a network of {elements:,} values, more "
            f"than the {MAX_POLICY_ELEMENTS:,} a qnorm policy may have"
        )
    try:
        with safe_open(model_path, "pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise QnormError(f"{model_path} is missing, truncated or corrupt: {exc}") from None
    if stored != expected:
        differ = sorted(
            k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k)
        )
        first = differ[0]
        raise QnormError(
            f"{model_path} does not fit its config's network ({len(differ)} tensor(s) differ; "
            f"{first}: config {expected.get(first)}, file {stored.get(first)})"
        )


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> Policy:
    """Rebuild the policy network of a checkpoint or run directory, in eval mode."""
    directory = resolve_checkpoint_dir(path)
    metadata = read_metadata(directory)
    try:
        spec = spec_from_dict(metadata["network"])
        env_id = str(metadata["env_id"])
        obs_shape = tuple(int(d) for d in metadata["observation_shape"])
        obs_dtype, step = str(metadata["observation_dtype"]), int(metadata["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise QnormError(
            f"{directory / CONFIG_FILE} lacks a field or has a bad one: {exc}"
        ) from None
    model_path = directory / MODEL_FILE
    check_fits_model_file(spec, model_path)  # before the network is allocated
    network = build_q_network(spec)
    try:
        state = load_file(model_path, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise QnormError(f"{model_path} is missing, truncated or corrupt: {exc}") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise QnormError(f"{model_path} does not fit its config's network ({detail})") from None
    network = network.to(device).eval()
    network.requires_grad_(False)
    return Policy(network, spec, env_id, obs_shape, obs_dtype, step, metadata, directory)


def recorded_evaluation(directory: Path) -> dict | None:
    """The training-time greedy evaluation a checkpoint's config.json records, if any."""
    try:
        evaluation = json.loads((Path(directory) / CONFIG_FILE).read_text()).get("evaluation")
        return {
            "step": int(evaluation["step"]),
            "mean_return": float(evaluation["mean_return"]),
            "episodes": int(evaluation["episodes"]),
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # older checkpoints, unevaluated ones, or an unreadable file


def better_checkpoint(directory: Path) -> tuple[Path, dict] | None:
    """Another checkpoint of the same run that scored higher in training's greedy evaluation.

    Compared on what training recorded (same episodes and seeds for every checkpoint of a
    run); a checkpoint without a record is beaten by the best recorded one.
    """
    directory = Path(directory)
    mine = recorded_evaluation(directory)
    best: tuple[Path, dict] | None = None
    for sibling in sorted(directory.parent.iterdir()) if directory.parent.is_dir() else []:
        record = recorded_evaluation(sibling) if sibling != directory else None
        if record is not None and (best is None or record["mean_return"] > best[1]["mean_return"]):
            best = (sibling, record)
    if best is None or (mine is not None and best[1]["mean_return"] <= mine["mean_return"]):
        return None
    return best
