"""Per-attack D' (``db_attacks = "per-attack"``): each cell of a D'-building runtime defense (RMC, RMC+,
WebNN) builds D' with the attack under test.

The RMC paper (Wu, Yuan, Wu, ICML 2020) builds D' with the attack it evaluates: its Table 6
"Single-Attack" row equals Table 1's RMC row, and Table 1's clean accuracy is the average over those
D' variants. Here a cell whose attack can build D' (a registered attack that needs no defense, in a
base or transfer cell) gets ``db_attacks = [attack]`` and ``db_params`` = that attack's parameters as
the cell runs them (the attack's per-dataset defaults, the grid's params, the cell's eps), overlaid
with the grid's per-attack table ``db_params = { cw-l2 = { steps = 20 } }`` if any (a cap on a costly
D'). Every other cell (adaptive attacks such as pgd-nn and pgd-skip, defense-aware attacks) falls back
to PGD D' with the defense's own ``db_params`` (its per-dataset defaults unless the grid gives shared
values), as the paper's defense-aware tables use PGD. The substitution happens when the grid's cells
are made, so each variant is its own runtime configuration: prepared and cached once, its clean
predictions cached on their own, and the record's ``params.runtime`` and ``dprime`` name it.
"""

from __future__ import annotations

from typing import Any

from bench.core.errors import BenchError

PER_ATTACK = "per-attack"
FALLBACK = "pgd"


def is_per_attack(params: dict[str, Any]) -> bool:
    return params.get("db_attacks") == PER_ATTACK


def check_db_attacks(name: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    """Refuse a ``db_attacks`` string other than "per-attack", and "per-attack" on a defense that does
    not build D' (one line each); returns the params left for the signature check."""
    value = params.get("db_attacks")
    if not isinstance(value, str):
        return params
    if value != PER_ATTACK:
        raise BenchError(f"{where}: db_attacks = {value!r} is neither a list of attacks nor \"{PER_ATTACK}\"; "
                         f"write db_attacks = [\"pgd\"] (a list) or db_attacks = \"{PER_ATTACK}\"")
    import defenses

    cls = defenses.DEFENSES.get(name)
    if not getattr(cls, "uses_adversarial_database", False):
        builders = ", ".join(n for n in defenses.DEFENSES.list_names()
                             if getattr(defenses.DEFENSES.get(n), "uses_adversarial_database", False)
                             and defenses.kind_of(n) == "runtime")
        raise BenchError(f"{where}: db_attacks = \"{PER_ATTACK}\" needs a defense that builds D' ({builders}); "
                         f"{name!r} has no D': remove db_attacks from it")
    return {k: v for k, v in params.items() if k != "db_attacks"}


def builds_dprime(attack: str, threat: str) -> bool:
    """Whether the cell's attack can make D' copies: a registered attack that needs no defense to run,
    in a cell that is not adaptive."""
    import attacks

    cls = attacks.ATTACKS.get_or_none(attack)
    return threat != "adaptive" and cls is not None and not getattr(cls, "needs_defense", False)


def _fallback(rest: dict[str, Any], db: dict[str, Any]) -> dict[str, Any]:
    """The fallback cell's runtime params: PGD with the defense's shared db_params (absent: its
    per-dataset defaults apply)."""
    fallback = {k: v for k, v in db.items() if not isinstance(v, dict) or k == FALLBACK}
    return {**rest, "db_attacks": [FALLBACK], **({"db_params": fallback} if fallback else {})}


def _fallback_attack_params(runtime: str, fallback: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The PGD parameters the fallback D' is built with: the grid's db_params, else the defense's
    per-dataset defaults (merged as the runner resolves a defense's parameters)."""
    import defenses
    from bench.core.data import family_of
    from bench.core.methods import with_dataset_defaults  # imports torch: not at grid load
    from defenses.database import attack_params_for

    resolved = with_dataset_defaults(defenses.DEFENSES.get_or_none(runtime), family_of(dataset), fallback)
    return attack_params_for(FALLBACK, resolved.get("db_params", {}))


def cell_runtime_params(params: dict[str, Any], attack: str, attack_params: dict[str, Any], eps: float | None,
                        threat: str, dataset: str, runtime: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The runtime params a cell runs with and its D' label (None: ``params`` are not per-attack).

    A PGD cell whose own D' parameters equal the fallback's gets the fallback's params: one D', one
    clean stream, shared with the adaptive cells (on RMC each duplicate is a whole stream of adaptations)."""
    if not is_per_attack(params):
        return params, None
    db = params.get("db_params") or {}
    rest = {k: v for k, v in params.items() if k not in ("db_attacks", "db_params")}
    if builds_dprime(attack, threat):
        import attacks
        from bench.core.data import family_of
        from bench.core.methods import with_dataset_defaults

        own = with_dataset_defaults(attacks.ATTACKS.get(attack), family_of(dataset), attack_params)
        if eps is not None:
            own["eps"] = eps
        table = db.get(attack)
        own.update(table if isinstance(table, dict) else {})
        if attack == FALLBACK and runtime is not None:
            fallback = _fallback(rest, db)
            if _fallback_attack_params(runtime, fallback, dataset) == own:
                return fallback, attack
        return {**rest, "db_attacks": [attack], "db_params": own}, attack
    return _fallback(rest, db), f"{FALLBACK} (fallback)"
