"""validate_job and validate_unit of the embed kernel: params, weight tensors, token batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabgrid.kernels.embed.model import Config, optional_shapes
from tabgrid.kernels.params import Described

JOB_PARAMS = frozenset({"model", "config"})
UNIT_PARAMS = frozenset({"lengths", "rows"})


def config_of(params: Mapping[str, Any], errors: list[str]) -> Config | None:
    if not isinstance(params.get("model"), str) or not params["model"]:
        errors.append("param 'model' must be the model's registered name")
    return Config.parse(params.get("config"), errors)


def weight_errors(config: Config, inputs: Described) -> list[str]:
    """Each tensor the forward pass needs is there, float32, of its shape; nothing else is."""
    errors: list[str] = []
    needed = config.shapes()
    allowed = needed | optional_shapes(config)
    missing = [name for name in needed if name not in inputs]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        errors.append(f"weight tensor(s) missing: {shown}{more}")
    for name, (dtype, shape) in inputs.items():
        if name == "tokens":
            continue
        want = allowed.get(name)
        if want is None:
            errors.append(f"unknown input {name!r}: not a tensor of this model")
        elif dtype != "float32" or tuple(shape) != want:
            errors.append(f"input {name!r} must be float32 {list(want)}, not {dtype} {list(shape)}")
    return errors


def token_errors(config: Config, params: Mapping[str, Any], inputs: Described) -> list[str]:
    """tokens int32 (n, L) with L <= max_seq_length; lengths and rows n ints each."""
    if "tokens" not in inputs:
        return ["input 'tokens' is missing"]
    dtype, shape = inputs["tokens"]
    if dtype != "int32" or len(shape) != 2 or not (shape[0] > 0 and shape[1] > 0):
        return [f"input 'tokens' must be non-empty int32 (texts, length), not {dtype} {shape}"]
    n, width = shape
    errors: list[str] = []
    if width > config.max_seq:
        errors.append(f"tokens are {width} long, over the model's max_seq_length {config.max_seq}")
    if n * width > config.max_tokens:
        errors.append(f"tokens are {n}x{width}: over {config.max_tokens} token rows in one unit")
    lengths = params.get("lengths")
    if not _ints(lengths, n, 1, width):
        errors.append(f"param 'lengths' must be {n} integers from 1 to {width} (the tokens' width)")
    if not _ints(params.get("rows"), n, 0, 1 << 31):
        errors.append(f"param 'rows' must be {n} non-negative integers (each text's index)")
    return errors


def _ints(value: Any, count: int, lo: int, hi: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(type(v) is int and lo <= v <= hi for v in value)
    )


def _unknown_params(params: Mapping[str, Any], allowed: frozenset[str]) -> list[str]:
    unknown = sorted(set(params) - allowed)
    return [f"unknown param(s) {', '.join(map(repr, unknown))}"] if unknown else []


def validate_job(params: dict[str, Any], inputs: Described) -> list[str]:
    """The model's config and all its weights, at the job level; tokens come with the units."""
    errors = _unknown_params(params, JOB_PARAMS | UNIT_PARAMS)
    config = config_of(params, errors)
    if config is not None:
        errors += weight_errors(config, {k: v for k, v in inputs.items() if k != "tokens"})
    return errors


def validate_unit(params: dict[str, Any], inputs: Described) -> list[str]:
    """One batch: the job's checks in one line (they repeat in every unit), then its tokens."""
    errors = _unknown_params(params, JOB_PARAMS | UNIT_PARAMS)
    config = config_of(params, errors)
    if config is None:
        return errors
    weights = weight_errors(config, inputs)
    if weights:
        more = f" (and {len(weights) - 1} more)" if len(weights) > 1 else ""
        errors.append(f"{weights[0]}{more}")
    return errors + token_errors(config, params, inputs)
