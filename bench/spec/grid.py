"""Declarative grid specs (TOML) and their expansion into cells.

A spec names one dataset and architecture, the train-time defenses (``[train.<name>]`` tables of
hyperparameters), the runtime defenses (``[runtime.<name>]``), and attacks (``[[attacks]]`` with
``name``, ``threat`` (base / adaptive / transfer), ``eps`` list, ``params``, optional ``surrogate`` and
``runtime`` restriction), optional ``[[positions]]`` (accuracy at stream position p, bench.spec.position_columns)
and optional ``[[figures]]`` for ``bench plot`` (bench.spec.figure_tables, drawn by
bench.report.grid_figures).
``layout = "star"`` pairs each train-time defense with runtime ``none`` and the ``base_model`` with
each runtime defense; ``layout = "cross"`` pairs every train-time defense with every runtime defense.
A method name no registry knows is refused (bench.spec.validate) unless its table or ``[[attacks]]``
entry says ``optional = true`` (a plugin's method that may be absent): its cells are then skipped.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.core.cache import config_hash
from bench.core.errors import BenchError
from bench.core.paths import check_name
from bench.core.registry import Registry
from bench.spec.dprime import cell_runtime_params
from bench.spec.figure_tables import check_figures
from bench.spec.purifier_fields import check_metric as check_purifier_metric

GRIDS: Registry = Registry("grid")
THREATS = ("base", "adaptive", "transfer")
#: Extra metrics a grid can ask for (``metrics = [...]``): Deep Defense's per-model metrics in every
#: record (bench.run.model_metrics), RIDE's Figure 7 distances in BPDA cells (bench.run.purifier_distances).
METRICS = ("deep-defense", "purifier-distances")
LAYOUTS = ("star", "cross")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    threat: str = "base"
    eps: tuple[float | None, ...] = (None,)
    params: dict[str, Any] = field(default_factory=dict)
    surrogate: dict[str, Any] = field(default_factory=dict)
    runtime: tuple[str, ...] = ()  # restrict to these runtime defenses (empty: all)
    label: str = ""
    threshold: float | None = None  # minimal-norm attacks: also report robust accuracy at this norm
    optional: bool = False  # an attack no registry knows (a plugin's, absent) is skipped, not refused


@dataclass(frozen=True)
class Cell:
    grid: str
    dataset: str
    arch: str
    train_defense: str
    train_params: dict[str, Any]
    runtime_defense: str
    runtime_params: dict[str, Any]
    attack: str
    attack_params: dict[str, Any]
    threat: str
    eps: float | None
    surrogate: dict[str, Any]
    limit: int | None
    train_limit: int | None
    seed: int
    attack_label: str
    train_split: str = "train"
    train_offset: int = 0
    #: The grid runs several seeds (``seeds = [...]``): the key names this cell's seed. Not part of
    #: the cell's identity (its seed is), so a grid's cell ids do not depend on how many seeds it lists.
    multi_seed: bool = False
    #: The D' of a per-attack runtime defense (bench.spec.dprime): the attack that built it, or
    #: "pgd (fallback)"; None otherwise. Not part of the identity: ``runtime_params`` hold the D'.
    dprime: str | None = None

    @property
    def key(self) -> str:
        """Human-readable identity used in baselines and progress output."""
        eps = "-" if self.eps is None else f"{self.eps:.4g}"
        key = f"{self.train_defense}/{self.runtime_defense}/{self.attack_label}/{self.threat}/{eps}"
        return f"{key}/seed{self.seed}" if self.multi_seed else key

    def config(self) -> dict[str, Any]:
        from dataclasses import asdict

        cfg = asdict(self)
        del cfg["multi_seed"], cfg["dprime"]
        if (self.train_split, self.train_offset) == ("train", 0):  # ids of grids without a stand-in stay as they were
            del cfg["train_split"], cfg["train_offset"]
        return cfg

    @property
    def cell_id(self) -> str:
        """Hash of everything that determines the cell's result."""
        from bench.core.version import __version__

        return config_hash({**self.config(), "grid": None, "attack_label": None, "version": __version__})


@dataclass
class GridSpec:
    name: str
    dataset: str
    arch: str
    train: dict[str, dict[str, Any]]
    runtime: dict[str, dict[str, Any]]
    attacks: list[AttackSpec]
    layout: str = "star"
    base_model: str = "standard"
    limit: int | None = None
    train_limit: int | None = None
    #: Where the training images come from: a stand-in such as "test" from ``train_offset`` on
    #: (e.g. a KNN database of test images disjoint from the evaluated ones).
    train_split: str = "train"
    train_offset: int = 0
    seed: int = 0
    #: ``seeds = [0, 1, 2]``: every cell runs once per seed (training, attack randomness and stream
    #: order all follow Cell.seed); empty: the one ``seed``. ``seed`` is then ``seeds[0]``.
    seeds: tuple[int, ...] = ()
    description: str = ""
    reference: dict[str, float] = field(default_factory=dict)
    reference_source: str = ""
    path: str = ""
    plugins: tuple[str, ...] = ()
    _resolved: dict[str, dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    metrics: tuple[str, ...] = ()
    #: The pictures ``bench plot`` draws ([[figures]] tables; see bench.report.grid_figures).
    figures: tuple[dict[str, Any], ...] = ()
    #: Fewer test points for a costly runtime defense (``[runtime.rmc] limit = 10``): its cells
    #: evaluate the first ``min(limit, its limit)`` test examples, a prefix of the other rows' points.
    runtime_limits: dict[str, int] = field(default_factory=dict)
    #: ("train" or "runtime", name) of the tables marked ``optional = true``: skipped when no
    #: registry knows the name (a plugin's method that may be absent), instead of refused.
    optional: frozenset[tuple[str, str]] = frozenset()
    #: ``wiring_check = true``: the grid only exercises every cell (an untrained model, settings far
    #: below a paper's); its leaderboard says so in its title, headline and the index.
    wiring_check: bool = False
    #: ``[[positions]]``: accuracy-at-stream-position-p columns (bench.spec.position_columns).
    positions: tuple[dict[str, Any], ...] = ()

    def limit_for(self, runtime: str, limit: int | None) -> int | None:
        own = self.runtime_limits.get(runtime)
        return own if limit is None else min(limit, own) if own else limit

    def pairs(self) -> list[tuple[str, str]]:
        """(train-time defense, runtime defense) pairs, in table order."""
        if self.layout == "cross":
            return [(t, r) for t in self.train for r in self.runtime]
        pairs = [(t, "none") for t in self.train]
        pairs += [(self.base_model, r) for r in self.runtime if r != "none"]
        return pairs

    @property
    def base_dir(self) -> Path | None:
        """The grid file's folder: relative paths in the spec start there."""
        return Path(self.path).parent if self.path else None

    def resolved_train(self) -> dict[str, dict[str, Any]]:
        """Train-time entries, with the sha256 of every checkpoint / model file a model source names
        (so a changed file is a new cell); a missing file is one line."""
        if self._resolved is None:
            from bench.spec import sources

            self._resolved = {name: sources.fingerprint(p, self.base_dir) if sources.is_provided(p) else p
                              for name, p in self.train.items()}
        return self._resolved

    def run_seeds(self, seed: int | None = None) -> tuple[int, ...]:
        """The seeds a run covers: ``seed`` (the --seed option) alone when given, else every seed of
        the grid (``seeds``, else its one ``seed``)."""
        if seed is not None:
            return (seed,)
        return self.seeds or (self.seed,)

    def cells(self, limit: int | None = None, seed: int | None = None) -> list[Cell]:
        """Every cell of the grid, once per seed of ``run_seeds(seed)`` (seed-major order)."""
        lim = limit if limit is not None else self.limit
        train_params = self.resolved_train()
        multi = len(self.seeds) > 1
        out = []
        for sd in self.run_seeds(seed):
            out += self._cells_of_seed(lim, sd, train_params, multi)
        return out

    def _cells_of_seed(self, lim: int | None, sd: int, train_params: dict[str, dict[str, Any]],
                       multi: bool) -> list[Cell]:
        out = []
        for train, runtime in self.pairs():
            for a in self.attacks:
                if a.runtime and runtime not in a.runtime:
                    continue
                for eps in a.eps:
                    runtime_params, dprime = cell_runtime_params(self.runtime.get(runtime, {}), a.name, a.params,
                                                                 eps, a.threat, self.dataset, runtime)
                    out.append(Cell(
                        grid=self.name, dataset=self.dataset, arch=self.arch,
                        train_defense=train, train_params=train_params.get(train, {}),
                        runtime_defense=runtime, runtime_params=runtime_params, dprime=dprime,
                        attack=a.name, attack_params=a.params, threat=a.threat, eps=eps,
                        surrogate=a.surrogate, limit=self.limit_for(runtime, lim), train_limit=self.train_limit,
                        seed=sd,
                        attack_label=a.label or a.name, train_split=self.train_split,
                        train_offset=self.train_offset, multi_seed=multi,
                    ))
        return out


def _register_builtin_grids() -> None:
    folder = resources.files("bench") / "grids"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            GRIDS.register(entry.name[: -len(".toml")])(Path(str(entry)))


_register_builtin_grids()


def resolve_path(name_or_path: str) -> Path:
    """A built-in grid name (bench/grids/<name>.toml) or a path to a TOML file."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise BenchError(f"grid file {path} not found")
        return path
    return GRIDS.get(name_or_path)


def load(name_or_path: str) -> GridSpec:
    path = resolve_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"malformed grid file {path}: {exc}") from None
    except OSError as exc:
        raise BenchError(f"cannot read grid file {path}: {exc.strerror}") from None
    try:
        return parse(raw, default_name=path.stem, path=str(path))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError, RecursionError) as exc:
        # A value of the wrong type that no specific check below names: still one line, never a traceback.
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise BenchError(f"{path}: invalid value in grid file ({type(exc).__name__}: {why}); see "
                         "bench/grids/*.toml for the expected types") from None


def _ball_norm(attack: str, params: Any = None) -> str:
    """The norm of a registered attack's ball: its ``norm`` parameter, else its class's, a wrapper's
    (bpda, eot) being its inner attack's ('Linf' when unknown, the strictest check)."""
    try:
        import attacks
        from attacks.bpda import wrapped_attack
    except ImportError:  # pragma: no cover
        return "Linf"
    if isinstance(params, dict) and params.get("norm") in _NORMS:  # pgd with norm = "L2"
        return params["norm"]
    factory = attacks.ATTACKS.get_or_none(attack)
    if factory is None:
        return "Linf"
    inner = wrapped_attack(factory, params if isinstance(params, dict) else {})
    return (inner or factory).norm


def _eps_list(value: Any, where: str, norm: str | Callable[[], str] = "Linf",
              dataset: str | None = None) -> tuple[float | None, ...]:
    """Parse eps values; ``norm`` may be a callable, asked only for an eps above 1 (importing the
    attack registry costs a torch import, which resuming a finished grid avoids). An L2 / L0 budget
    may not exceed what an image of ``dataset`` allows (bench.core.contracts.budget_limit)."""
    if value is None:
        return (None,)
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, str):
            try:
                num, _, den = v.partition("/")
                v = float(num) / float(den) if den else float(num)
            except (ValueError, ZeroDivisionError):
                raise BenchError(f"{where}: eps {v!r} is not a number (write 0.03 or \"8/255\")") from None
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:  # v != v: NaN
            raise BenchError(f"{where}: eps {v!r} is not a number")
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise BenchError(f"{where}: eps {v} is not finite; give the perturbation budget as a number")
        if float(v) > 1.0 and callable(norm):
            norm = norm()
        if float(v) < 0.0 or (norm == "Linf" and float(v) > 1.0):
            raise BenchError(f"{where}: eps {v} is outside [0, 1] (images are scaled to [0, 1])")
        if float(v) > 1.0 and dataset is not None:
            _check_budget(float(v), str(norm), dataset, where)
        out.append(float(v))
    if not out:
        raise BenchError(f"{where}: eps list is empty; omit eps for minimal-norm attacks")
    if len(set(out)) < len(out):
        twice = next(e for e in out if out.count(e) > 1)
        raise BenchError(f"{where}: eps {twice:g} is listed twice (each budget is one cell); list it once")
    return tuple(out)


def _check_budget(eps: float, norm: str, dataset: str, where: str) -> None:
    """An L2 / L0 budget larger than any perturbation of a [0, 1] image of ``dataset`` can be."""
    from bench.core import data
    from bench.core.contracts import budget_limit

    shape = data.info(dataset).shape
    if shape is None or norm not in ("L2", "L1", "L0"):
        return  # a dataset that declares no shape: nothing to compare with
    most = budget_limit(norm, shape)
    if eps > most:
        raise BenchError(f"{where}: eps {eps:g} is larger than any {norm} perturbation of a {dataset} image "
                         f"({'x'.join(map(str, shape))} values in [0, 1]) can be; use at most {most:.4g}")


def _threshold(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise BenchError(f"{where}: threshold {value!r} must be a positive number (a perturbation norm)")
    return float(value)


def _is_positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, dict[str, Any]]:
    val = raw.get(key, {})
    if not isinstance(val, dict) or not all(isinstance(v, dict) for v in val.values()):
        raise BenchError(f"{where}: [{key}] must be tables of hyperparameters, e.g. [{key}.standard]")
    return {k: dict(v) for k, v in val.items()}


#: Settings of the run, not of a method: a grid's method tables may not change them (a runtime
#: defense's ``cache_dir`` would write outside --cache-dir). Each with the option that sets it.
RUN_SETTINGS = {"cache_dir": "--cache-dir", "data_dir": "--data-dir", "results_dir": "--results-dir",
                "leaderboard_dir": "`bench leaderboard --out`", "out_dir": "`bench plot --out-dir`",
                "tracking_uri": "--tracking-uri"}


def _refuse_run_settings(params: Any, where: str) -> None:
    for key in RUN_SETTINGS.keys() & (params.keys() if isinstance(params, dict) else set()):
        raise BenchError(f"{where} sets {key}, which belongs to the whole run, not one method; "
                         f"remove it and pass {RUN_SETTINGS[key]} on the command line")


def _pop_optional(tables: dict[str, dict[str, Any]], kind: str, where: str) -> set[tuple[str, str]]:
    """Take ``optional = true`` out of each ``[kind.<name>]`` table: (kind, name) of those that said so."""
    out = set()
    for name, params in tables.items():
        flag = params.pop("optional", False)
        if not isinstance(flag, bool):
            raise BenchError(f"{where}: [{kind}.{name}] optional must be true or false, got {flag!r}"[:300])
        if flag:
            out.add((kind, name))
    return out


def _refuse_duplicates(spec: GridSpec, where: str) -> None:
    """Two [[attacks]] entries giving one cell would be one record counted twice: name both."""
    seen: dict[str, int] = {}
    for train, runtime in spec.pairs():
        for i, a in enumerate(spec.attacks):
            if a.runtime and runtime not in a.runtime:
                continue
            for eps in a.eps:
                key = config_hash([train, runtime, a.name, a.label or a.name, a.threat, eps, a.params, a.surrogate])
                first = seen.setdefault(key, i)
                if first != i:
                    budget = "" if eps is None else f" at eps {eps:g}"
                    raise BenchError(f"{where}: attacks[{first}] and attacks[{i}] are the same cell "
                                     f"({a.label or a.name}, {a.threat}{budget}, {train}/{runtime}); remove one")


def _seeds(raw: dict[str, Any], where: str) -> tuple[int, ...]:
    """``seeds = [0, 1, 2]``: distinct integers in [0, 2**63), not beside ``seed`` (() when absent)."""
    if "seeds" not in raw:
        return ()
    if "seed" in raw:
        raise BenchError(f"{where}: give either seed = N or seeds = [N, ...], not both; remove one")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise BenchError(f"{where}: seeds must be a non-empty list of integers, e.g. seeds = [0, 1, 2], "
                         f"got {seeds!r}"[:300])
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63:
            raise BenchError(f"{where}: seeds must be integers in [0, 2**63), got {s!r}"[:300])
    if len(set(seeds)) < len(seeds):
        twice = next(s for s in seeds if seeds.count(s) > 1)
        raise BenchError(f"{where}: seed {twice} is listed twice in seeds (each seed runs every cell once); "
                         "list it once")
    return tuple(seeds)


def _resolve_file(value: str, grid_path: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() or not grid_path else Path(grid_path).parent / p


def parse(raw: dict[str, Any], default_name: str = "grid", path: str = "") -> GridSpec:
    where = path or default_name
    known = {"name", "description", "dataset", "arch", "train", "runtime", "attacks", "layout",
             "base_model", "limit", "train_limit", "seed", "seeds", "reference", "reference_source", "plugins",
             "train_split", "train_offset", "metrics", "figures", "wiring_check", "positions"}
    unknown = set(raw) - known
    if unknown:
        raise BenchError(f"{where}: unknown keys {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    train = _table(raw, "train", where) or {"standard": {}}
    runtime = _table(raw, "runtime", where) or {"none": {}}
    optional = _pop_optional(train, "train", where) | _pop_optional(runtime, "runtime", where)
    for kind, table in (("train", train), ("runtime", runtime)):
        for name, params in table.items():
            _refuse_run_settings(params, f"{where}: [{kind}.{name}]")
    from bench.spec import sources

    for name, params in train.items():
        if sources.is_provided(params):
            sources.validate(name, params, where)
    if "arch" not in raw and all(sources.is_provided(p) for p in train.values()):
        archs = {p.get("arch", "custom") for p in train.values()}
        raw = {**raw, "arch": archs.pop() if len(archs) == 1 else "custom"}
    for key in ("dataset", "arch"):
        if not isinstance(raw.get(key), str):
            raise BenchError(f"{where}: '{key}' is required (a name, see `bench list {key}s`)")
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise BenchError(f"{where}: plugins must be a list of Python file paths, e.g. plugins = [\"my_defense.py\"]")
    layout = raw.get("layout", "star")
    if layout not in LAYOUTS:
        raise BenchError(f"{where}: layout {layout!r} unknown; use star or cross")
    attacks = []
    raw_attacks = raw.get("attacks", [])
    if not isinstance(raw_attacks, list):
        raise BenchError(f"{where}: attacks must be an array of tables ([[attacks]])")
    for i, a in enumerate(raw_attacks):
        aw = f"{where}: attacks[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise BenchError(f"{aw} needs a name")
        extra = set(a) - {"name", "threat", "eps", "params", "surrogate", "runtime", "label", "threshold", "optional"}
        if extra:
            raise BenchError(f"{aw}: unknown keys {', '.join(sorted(extra))}")
        threat = a.get("threat", "base")
        if threat not in THREATS:
            raise BenchError(f"{aw}: threat {threat!r} unknown; use one of {', '.join(THREATS)}")
        if threat == "transfer" and not a.get("surrogate"):
            raise BenchError(f"{aw}: a transfer attack needs surrogate = {{arch = ..., seed = ...}}")
        for key in ("params", "surrogate"):
            if not isinstance(a.get(key, {}), dict):
                raise BenchError(f"{aw}: {key} must be a table, e.g. {key} = {{ steps = 10 }}")
        only = a.get("runtime", [])
        names = [only] if isinstance(only, str) else only
        if not isinstance(names, list) or not all(isinstance(r, str) for r in names):
            raise BenchError(f"{aw}: runtime must be a runtime defense name or a list of names")
        if not isinstance(a.get("label", ""), str):
            raise BenchError(f"{aw}: label must be a string")
        if not isinstance(a.get("optional", False), bool):
            raise BenchError(f"{aw}: optional must be true or false")
        _refuse_run_settings(a.get("params", {}), f"{aw}: params")
        _refuse_run_settings(a.get("surrogate", {}), f"{aw}: surrogate")
        if isinstance(a.get("surrogate", {}).get("params"), dict):
            _refuse_run_settings(a["surrogate"]["params"], f"{aw}: surrogate params")
        norm = functools.partial(_ball_norm, a["name"], a.get("params"))
        eps_param = a.get("params", {}).get("eps")
        if isinstance(eps_param, (int, float)) and not isinstance(eps_param, bool):
            _eps_list(eps_param, f"{aw}: params", norm, raw["dataset"])
        attacks.append(AttackSpec(
            name=a["name"], threat=threat,
            eps=_eps_list(a.get("eps"), aw, norm, raw["dataset"]),
            params=dict(a.get("params", {})),
            surrogate=dict(a.get("surrogate", {})), runtime=tuple(names),
            label=a.get("label", ""), threshold=_threshold(a.get("threshold"), aw), optional=a.get("optional", False),
        ))
    for key in ("limit", "train_limit"):
        v = raw.get(key)
        if v is not None and not _is_positive_int(v):
            raise BenchError(f"{where}: {key} must be a positive integer, got {v!r}")
    train_split, train_offset = raw.get("train_split", "train"), raw.get("train_offset", 0)
    if train_split not in ("train", "test"):
        raise BenchError(f"{where}: train_split must be \"train\" or \"test\", got {train_split!r}")
    if not isinstance(train_offset, int) or isinstance(train_offset, bool) or train_offset < 0:
        raise BenchError(f"{where}: train_offset must be a non-negative integer, got {train_offset!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise BenchError(f"{where}: seed must be an integer in [0, 2**63), got {seed!r}")
    seeds = _seeds(raw, where)
    for key in ("name", "base_model", "description", "reference_source"):
        if key in raw and not isinstance(raw[key], str):
            raise BenchError(f"{where}: {key} must be a string, got {raw[key]!r}"[:300])
    check_name(raw.get("name", default_name),
               f"{where}: grid name" if "name" in raw else f"{where}: grid name (from the file name; set name = ...)")
    runtime_limits = {}
    for name, params in runtime.items():
        if "limit" in params:
            v = params.pop("limit")
            if not _is_positive_int(v):
                raise BenchError(f"{where}: [runtime.{name}] limit must be a positive integer (test points "
                                 f"for this defense's cells), got {v!r}")
            runtime_limits[name] = v
    wiring_check = raw.get("wiring_check", False)
    if not isinstance(wiring_check, bool):
        raise BenchError(f"{where}: wiring_check must be true or false, got {wiring_check!r}"[:300])
    ref = raw.get("reference", {})
    metrics = raw.get("metrics", [])
    if not isinstance(metrics, list) or not set(metrics) <= set(METRICS):
        raise BenchError(f"{where}: metrics must be a list drawn from {', '.join(METRICS)}, got {metrics!r}")
    figures = check_figures(raw.get("figures", []), where)
    check_purifier_metric(metrics, attacks, figures, where)
    spec = GridSpec(
        name=raw.get("name", default_name), dataset=raw["dataset"], arch=raw["arch"],
        train=train, runtime=runtime, runtime_limits=runtime_limits,
        attacks=attacks, layout=layout,
        base_model=raw.get("base_model", "standard" if "standard" in train else next(iter(train))),
        limit=raw.get("limit"), train_limit=raw.get("train_limit"), train_split=train_split,
        train_offset=train_offset, seed=seeds[0] if seeds else int(seed), seeds=seeds,
        description=raw.get("description", ""), reference={str(k): float(v) for k, v in ref.items()},
        reference_source=raw.get("reference_source", ""), path=path, metrics=tuple(metrics),
        plugins=tuple(str(_resolve_file(p, path)) for p in plugins),
        figures=figures, optional=frozenset(optional),
        wiring_check=wiring_check,
    )
    if "positions" in raw:
        from bench.spec.position_columns import check_positions

        spec.positions = check_positions(raw["positions"], where, attacks,
                                         lambda rt: spec.limit_for(rt, spec.limit) if rt else spec.limit)
    if layout == "star" and spec.base_model not in spec.train:
        raise BenchError(f"{where}: base_model {spec.base_model!r} must be one of the [train] defenses")
    _refuse_duplicates(spec, where)
    check_reference(spec, where)
    return spec


_NORMS = ("Linf", "L2", "L1", "L0")


def reference_keys(spec: GridSpec, full: bool = True) -> list[str]:
    """Every key a ``[reference]`` number may have: ``<train>/<runtime>/<column>`` for each row of the
    leaderboard, the column being ``clean``, an attack's label (``bpda (adaptive)``; it matches every
    budget of that attack), with ``full`` also its full column label (``bpda (adaptive) Linf 0.1``), or
    a per-model metric column when the grid asks for Deep Defense's metrics. Built from the grid's own cells; the
    full labels ask the attack registry for each attack's norm (a torch import)."""
    from bench.spec.labels import attack_label, column_label
    from bench.spec.metric_columns import COLUMNS
    from bench.spec.position_columns import position_columns

    keys: dict[str, None] = {}
    for train, runtime in spec.pairs():
        cols = ["clean"]
        for a in spec.attacks:
            if a.runtime and runtime not in a.runtime:
                continue
            rec = {"attack": a.label or a.name, "threat": a.threat}
            cols.append(attack_label(rec))
            if full:
                norms = _norms_of(a)
                cols += [column_label({**rec, "eps": eps, "norm": norm}) for eps in a.eps for norm in norms]
        if "deep-defense" in spec.metrics:  # the only metric with leaderboard columns
            cols += list(COLUMNS.values())
        cols += [c for c, *_ in position_columns(spec, runtime)]
        keys.update((f"{train}/{runtime}/{c}", None) for c in cols)
    return list(keys)


def _norms_of(a: AttackSpec) -> list[str]:
    """The norm(s) a cell of ``a`` may record: a ``norm`` parameter, a wrapper's inner attack (bpda,
    eot: ``attack = "pgd"``), else the registered class's; any norm for an attack no registry knows
    yet (a plugin loaded later)."""
    if isinstance(a.params.get("norm"), str):
        return [a.params["norm"]]
    names = [a.name] + ([a.params["attack"]] if isinstance(a.params.get("attack"), str) else [])
    if not all(_known_attack(n) for n in names):
        return list(_NORMS)
    return list(dict.fromkeys(_ball_norm(n) for n in names))


def _known_attack(name: str) -> bool:
    try:
        import attacks

        return name in attacks.ATTACKS
    except ImportError:  # pragma: no cover
        return False


def check_reference(spec: GridSpec, where: str) -> None:
    """A ``[reference]`` key that names no cell of the leaderboard would silently never be shown:
    one line naming the key and the closest valid ones. Bare attack labels are checked without a
    torch import; only a key that is not one asks the attack registry for norms."""
    if not spec.reference:
        return
    bare = set(reference_keys(spec, full=False))
    missing = [k for k in spec.reference if k not in bare]
    if not missing:
        return
    valid = reference_keys(spec)
    for key in missing:
        if key in valid:
            continue
        import difflib

        # a key missing its threat or budget ("bpda" for "bpda (adaptive)") first, then look-alikes
        close = [k for k in valid if k.startswith(key + " ")][:2]
        close += [k for k in difflib.get_close_matches(key, valid, n=3, cutoff=0.6) if k not in close][:3 - len(close)]
        if not close:  # same row, any column
            row = key.rsplit("/", 1)[0] + "/"
            close = [k for k in valid if k.startswith(row)][:3] or valid[:3]
        raise BenchError(f"{where}: [reference] key {key!r} matches no leaderboard cell of this grid, so its "
                         f"number would never be shown; did you mean {' or '.join(repr(c) for c in close)}? "
                         "(keys are \"<train>/<runtime>/<column>\": clean, an attack label with \"(<threat>)\" "
                         "when not base, optionally its budget, e.g. \"pgd Linf 0.1\")")
