"""Param groups as torch.optim has them: dicts of ``"params"`` and hyperparameters.

``Adam`` and ``ShardedAdam`` take either a list of arrays (one group, the constructor's
config) or a list of dicts such as ``[{"params": [w1, w2]}, {"params": [b1, b2],
"weight_decay": 0.0}]``, a key missing from a dict taking the constructor's value. The
keys are AdamConfig's fields (``beta1``/``beta2``, not torch's ``betas``). Every error
names the group and the key (``param_groups[1]['lr']``) and is raised before anything
changes.
"""
from __future__ import annotations

import dataclasses
import operator

from .config import AdamConfig, checked_lr
from .validation import as_list

__all__ = ["HYPERPARAMETERS", "is_group_list", "make_groups", "group_config", "GroupConfig",
           "check_distinct", "step_rates", "describe_groups", "OneGroupAttributes"]

#: The hyperparameters a group may set: every AdamConfig field.
HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(AdamConfig))
#: Those a step reads from the dict by value (lr goes to the backend as the step's lr).
_REBUILT_FROM = tuple(k for k in HYPERPARAMETERS if k != "lr")


def is_group_list(params) -> bool:
    """Whether ``params`` is a list of group dicts (not of arrays)."""
    return isinstance(params, (list, tuple)) and len(params) > 0 and all(
        isinstance(g, dict) for g in params)


def make_groups(params, defaults: AdamConfig, first_index: int = 0) -> list[dict]:
    """The param group dicts for ``params`` (arrays or group dicts): each with its
    ``"params"`` list and every hyperparameter, defaults filled in; checked."""
    if not is_group_list(params):
        return [{"params": list(as_list(params, "params")), **defaults.to_dict()}]
    groups = [check_group(g, first_index + i, defaults) for i, g in enumerate(params)]
    return groups


def check_group(group, i: int, defaults: AdamConfig) -> dict:
    """A new dict of ``group``'s params and hyperparameters (defaults filled in), or an
    error naming ``param_groups[i]`` and the key."""
    where = f"param_groups[{i}]"
    if not isinstance(group, dict):
        raise TypeError(f"{where} must be a dict with a 'params' key, got "
                        f"{type(group).__name__}")
    if "params" not in group:
        raise ValueError(f"{where} lacks 'params' (its list of arrays)")
    unknown = [k for k in group if k != "params" and k not in HYPERPARAMETERS]
    if unknown:
        hint = " (torch's betas are beta1 and beta2 here)" if "betas" in unknown else ""
        raise ValueError(f"{where} has unknown key {unknown[0]!r}; expected 'params' and "
                         f"any of {', '.join(HYPERPARAMETERS)}{hint}")
    params = group["params"]
    if isinstance(params, dict) or is_group_list(params):
        raise TypeError(f"{where}['params'] must be a list of arrays, got "
                        f"{type(params).__name__}")
    out = {"params": list(as_list(params, f"{where}['params']")), **defaults.to_dict()}
    for key in HYPERPARAMETERS:
        if key in group:
            out[key] = group[key]
            _checked(defaults, {key: group[key]}, where)
    group_config(out, i)
    return out


def check_distinct(params, i: int, seen: set) -> None:
    """ValueError naming ``param_groups[i]['params'][j]`` when a tensor of group ``i`` is
    in ``seen`` (the ids of the tensors of the groups before it) or twice in the group;
    adds the group's ids to ``seen``."""
    for j, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"param_groups[{i}]['params'][{j}] is already in a param "
                             "group; a tensor belongs to one group, once")
        seen.add(id(p))


def step_rates(lr, n: int) -> list[float]:
    """One checked learning rate per group of ``n`` from a step's ``lr`` (a number for
    every group, or a sequence of one per group); errors name ``param_groups[i]['lr']``."""
    rates = list(lr) if isinstance(lr, (list, tuple)) else [lr] * n
    if len(rates) != n:
        raise ValueError(f"lr holds {len(rates)} values but there are {n} param groups")
    for i, rate in enumerate(rates):
        try:
            rates[i] = checked_lr(rate)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"param_groups[{i}]['lr']: {exc}") from None
    return rates


def describe_groups(param_groups: list[dict], defaults: AdamConfig) -> tuple[dict, list[dict]]:
    """(config, entries) as state dicts and checkpoints keep the groups: each entry is a
    group's hyperparameters (its current lr) and the indices of its tensors in the list
    of every tensor; ``config`` is the only group's hyperparameters, or the defaults when
    there are several (the format from before groups stays readable)."""
    entries, start = [], 0
    for i, group in enumerate(param_groups):
        n = len(group["params"])
        entries.append({**group_config(group, i).to_dict(), "params": list(range(start, start + n))})
        start += n
    config = ({k: v for k, v in entries[0].items() if k != "params"} if len(entries) == 1
              else defaults.to_dict())
    return config, entries


def group_config(group: dict, i: int) -> AdamConfig:
    """The AdamConfig of a group dict; an error names ``param_groups[i]`` and the key."""
    missing = [k for k in HYPERPARAMETERS if k not in group]
    if missing:
        raise ValueError(f"param_groups[{i}] lacks {missing[0]!r}")
    return _checked(AdamConfig(), {k: group[k] for k in HYPERPARAMETERS}, f"param_groups[{i}]")


def _checked(base: AdamConfig, values: dict, where: str) -> AdamConfig:
    try:
        return dataclasses.replace(base, **values)
    except (TypeError, ValueError) as exc:
        key = next((k for k in values if k in str(exc)), next(iter(values)))
        raise type(exc)(f"{where}[{key!r}]: {exc}") from None


class GroupConfig:
    """A group's AdamConfig, made again only when one of its dict's hyperparameters
    other than lr is another object than when it was made: a step costs one identity
    test per key, and an lr schedule (the dict's ``"lr"`` changed between steps) goes to
    the backend as the step's lr, under the same config."""

    def __init__(self):
        self.config: AdamConfig | None = None
        self._values: tuple = ()

    def of(self, group: dict, i: int) -> AdamConfig:
        try:
            values = tuple(map(group.__getitem__, _REBUILT_FROM))
        except KeyError as exc:
            raise ValueError(f"param_groups[{i}] lacks {exc.args[0]!r}") from None
        if self.config is None or not all(map(operator.is_, values, self._values)):
            config = group_config(group, i)
            self.config, self._values = config, values
        return self.config


class OneGroupAttributes:
    """``config`` and ``state`` of an optimizer with one param group, the interface from
    before groups; with several they raise AttributeError pointing at ``param_groups[i]``
    and ``states[i]``. The optimizer holds ``param_groups``, ``states`` and ``_configs``
    (one GroupConfig per group)."""

    param_groups: list[dict]
    states: list
    _configs: list[GroupConfig]

    @property
    def config(self) -> AdamConfig:
        """The AdamConfig of the only param group, at its current lr."""
        group = self.param_groups[self._only("config")]
        config = self._configs[0].of(group, 0)
        return config if config.lr == group["lr"] else dataclasses.replace(config,
                                                                         lr=group["lr"])

    @config.setter
    def config(self, config: AdamConfig) -> None:
        if not isinstance(config, AdamConfig):
            raise TypeError(f"config must be an AdamConfig, got {type(config).__name__}")
        self.param_groups[self._only("config")].update(config.to_dict())

    @property
    def state(self):
        """The AdamState of the only param group (``states`` holds one per group)."""
        return self.states[self._only("state")]

    @state.setter
    def state(self, state) -> None:
        self.states[self._only("state")] = state

    def _only(self, what: str) -> int:
        name = type(self).__name__
        if len(self.param_groups) != 1:
            article = "an" if name[0] in "AEIOU" else "a"
            raise AttributeError(f"{name}.{what} belongs to {article} {name} of one param group; "
                                 f"this one has {len(self.param_groups)}: use param_groups[i] "
                                 "and states[i]")
        return 0
