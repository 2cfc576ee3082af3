"""``--smoke``: every cell of any grid in minutes, at the grid's real shapes.

The rule, applied to every method's value (the grid's, else the seed paper's dataset default, else
the signature default; ``None`` counts as unbounded) and never raising one:

- test points: ``limit`` <= 4 (still a stream of several points for the stateful defenses); training
  images: ``train_limit`` <= 128, one batch at the usual training batch size of 128
- training: ``epochs``, ``pretrain_epochs`` <= 1; adversarial-training and DeepFool unrolling
  ``steps`` / ``iterations`` <= 2 (transfer surrogates too)
- attacks: ``steps`` <= 2, ``restarts`` / ``n_restarts`` / ``binary_search_steps`` / ``rounds`` <= 1,
  AutoAttack ``n_iter`` <= 2 and ``n_queries`` <= 20, EOT draws ``n`` <= 2, JSMA ``max_iters`` <= 2
- runtime defenses: K (``k``) <= 8 (the database defenses' K; median's kernel size is no budget),
  adversarial copies in D' (``copies``) <= 1 and their attack's ``steps`` <= 2, RMC ``max_epochs``
  <= 2 and ``patience`` <= 1 (uncapped, one CIFAR-10 ResNet-32 point can adapt for half an hour on a
  CPU), RIDE ``iterations`` <= 2 with one checkpoint

Why these caps (issue 13, CIFAR-10 on a loaded 2-core box): RMC's per-point adaptation and
calibration dominate a smoke, and cost grows with points x K; with 16 points, 512 images and K 32
the cifar10 smoke's RMC cells took 70-130 s each. ``bench estimate`` times its pieces at 16 points and
512 images (``bench.run.estimate.ESTIMATE_LIMIT``), where per-cell overhead matters less.

Architecture, input shape, normalisation, batch sizes, eps and the device stay as the grid says. The
smoke grid is named ``<grid>.smoke``: its records go to ``results/<grid>.smoke.jsonl`` and its MLflow
experiment is separate and tagged ``budget=smoke``, so nothing reaches real results, baselines or
leaderboards.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.spec.grid import AttackSpec, GridSpec

LIMIT, TRAIN_LIMIT = 4, 128
TRAIN_CAPS = {"epochs": 1, "pretrain_epochs": 1, "steps": 2, "iterations": 2}
ATTACK_CAPS = {"steps": 2, "restarts": 1, "n_restarts": 1, "binary_search_steps": 1, "rounds": 1, "n_iter": 2,
               "n_queries": 20, "n": 2, "max_iters": 2}
RUNTIME_CAPS = {"k": 8, "copies": 1, "max_epochs": 2, "patience": 1, "iterations": 2, "checkpoints": 1}
NESTED = {"db_params": {"steps": 2}, "params": TRAIN_CAPS}  # D' attack; a surrogate's training


def method_defaults(factory: Any, family: str) -> dict[str, Any]:
    import inspect

    from bench.spec.validate import signature_params

    out: dict[str, Any] = {}
    names, _ = signature_params(factory)
    for cls in reversed(getattr(factory, "__mro__", (factory,))):
        init = vars(cls).get("__init__") if isinstance(cls, type) else None
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if name in names and p.default is not inspect.Parameter.empty:
                out[name] = p.default
    out.update(getattr(factory, "dataset_defaults", {}).get(family, {}))
    return out


def shrink(params: dict[str, Any], caps: dict[str, int], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``params`` with every capped name at min(its value, the cap); names only in ``defaults`` are
    added when the default exceeds the cap (or is None)."""
    out = dict(params)
    defaults = defaults or {}
    for name, cap in caps.items():
        if name in out or name in defaults:
            value = out.get(name, defaults.get(name))
            if isinstance(value, bool):
                continue
            if value is None or (isinstance(value, (int, float)) and value > cap):
                out[name] = cap
    for name, inner in NESTED.items():
        if name in out and isinstance(out[name], dict):
            out[name] = shrink(out[name], inner)
        elif name == "db_params" and name in defaults:  # None: the D' attack's own (uncapped) defaults
            out[name] = shrink(defaults[name] or {}, inner)
    return out


def cap_database_attacks(params: dict[str, Any], defaults: dict[str, Any], family: str) -> dict[str, Any]:
    """Each D' attack's own budgets capped too (JSMA's pixel-pair iterations, C&W's search steps): in
    ``db_params``' table for that attack (defenses.database.attack_params_for), since the shared
    ``db_params`` go to every attack of the mix and PGD takes no ``max_iters``."""
    import attacks
    from bench.spec.validate import signature_params

    names = params.get("db_attacks", defaults.get("db_attacks")) or ["pgd"]
    db = params.get("db_params", defaults.get("db_params")) or {}
    if names == "per-attack" and isinstance(db, dict):  # each cell's attack params are capped as attacks;
        names = [n for n, v in db.items() if isinstance(v, dict)]  # the grid's per-attack tables here
    if not isinstance(db, dict) or not isinstance(names, (list, tuple)):
        return params  # the defense's own validation reports it
    db = dict(db)
    for n in names:
        factory = attacks.ATTACKS.get_or_none(n) if isinstance(n, str) else None
        if factory is None:
            continue
        accepted = set(signature_params(factory)[0])
        caps = {k: v for k, v in ATTACK_CAPS.items() if k in accepted and k not in db}
        own = db.get(n) if isinstance(db.get(n), dict) else {}
        capped = shrink(own, caps, method_defaults(factory, family))
        if capped != own:
            db[n] = capped
    return {**params, "db_params": db}


def runtime_caps(factory: Any) -> dict[str, int]:
    """RUNTIME_CAPS for one runtime defense: ``k`` is K nearest neighbours only for the defenses that
    search a database (``needs_train_set``); a purifier's ``k`` (median: the odd kernel size) is not a
    budget, and capping 9 or 11 at 8 would make it invalid."""
    if getattr(factory, "needs_train_set", False):
        return RUNTIME_CAPS
    return {name: cap for name, cap in RUNTIME_CAPS.items() if name != "k"}


def smoke_spec(spec: GridSpec, limit: int = LIMIT, train_limit: int = TRAIN_LIMIT) -> GridSpec:
    """The grid with every budget shrunk by the rule above (see the module docstring); ``limit`` and
    ``train_limit`` are the caps on test points and training images (``bench estimate`` times more)."""
    import attacks
    import defenses
    from attacks.bpda import wrapped_attack
    from bench.core import data
    from bench.core.zoo import is_zoo_name
    from bench.spec import sources

    family = data.family_of(spec.dataset)

    train = {}
    for name, params in spec.train.items():
        factory = None if is_zoo_name(name) or sources.is_provided(params) else defenses.DEFENSES.get_or_none(name)
        train[name] = params if factory is None else shrink(params, TRAIN_CAPS, method_defaults(factory, family))
    runtime = {}
    for name, params in spec.runtime.items():
        factory = defenses.DEFENSES.get_or_none(name)
        runtime[name] = (params if factory is None
                         else shrink(params, runtime_caps(factory), method_defaults(factory, family)))
        if factory is not None and "db_params" in method_defaults(factory, family):
            runtime[name] = cap_database_attacks(runtime[name], method_defaults(factory, family), family)
    shrunk_attacks = []
    for a in spec.attacks:
        factory = attacks.ATTACKS.get_or_none(a.name)
        params = a.params if factory is None else shrink(a.params, ATTACK_CAPS, method_defaults(factory, family))
        inner = wrapped_attack(factory, params)  # a wrapper (bpda, eot): the inner attack's budget too
        if inner is not None:
            params = shrink(params, ATTACK_CAPS, method_defaults(inner, family))
        surrogate = dict(a.surrogate)
        if surrogate:
            sur_factory = defenses.DEFENSES.get_or_none(surrogate.get("defense", "standard"))
            surrogate["params"] = shrink(dict(surrogate.get("params", {})), TRAIN_CAPS,
                                         method_defaults(sur_factory, family) if sur_factory else None)
        shrunk_attacks.append(AttackSpec(a.name, a.threat, a.eps, params, surrogate, a.runtime, a.label,
                                         optional=a.optional))
    return dataclasses.replace(
        spec, name=f"{spec.name}.smoke", train=train, runtime=runtime, attacks=shrunk_attacks,
        limit=min(spec.limit or limit, limit), train_limit=min(spec.train_limit or train_limit, train_limit),
        description=f"smoke run of {spec.name} (budgets shrunk, see bench.spec.smoke)", _resolved=None)
