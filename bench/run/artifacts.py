"""What the cells of one run share, built once and cached on disk by content.

The test and training splits, trained (or loaded) models, prepared runtime defenses, configured
attacks, and adversarial examples: crafted once per (model, attack, eps) for the ``base`` and
``transfer`` threat models, since those do not depend on the runtime defense. Keys are config hashes,
so a changed hyperparameter, dataset slice or checkpoint is a new artifact.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import attacks
import defenses
from bench.core import data, models
from bench.core.cache import atomic_torch_save, config_hash, held_elsewhere, torch_load_or_none
from bench.core.cache import lock as cache_lock
from bench.core.errors import BenchError
from bench.core.methods import with_dataset_defaults
from bench.core.version import __version__
from bench.core.zoo import is_zoo_name, load_robustbench
from bench.run import user_model
from bench.run.options import RunOptions
from bench.spec import sources
from bench.spec.grid import Cell, GridSpec
from bench.spec.validate import signature_params


def _accepts(factory: Any, name: str) -> bool:
    """Whether ``factory`` takes keyword ``name``. A ``**kw`` that forwards to a base class's
    constructor accepts only what that base accepts (the MRO rule of ``bench.spec.validate``)."""
    try:
        inspect.signature(factory)
    except (TypeError, ValueError):
        return False  # unreadable (a C extension): pass nothing it may not take
    params, open_ = signature_params(factory)
    return name in params or open_


def resolve_params(factory: Any, family: str, given: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Seed-paper defaults for the dataset family, then the grid's values, then run-level extras
    (seed, eps, cache_dir) where the factory accepts them."""
    params = with_dataset_defaults(factory, family, given)
    for k, v in extra.items():
        if v is not None and k not in given and _accepts(factory, k):
            params[k] = v
    return params


class ArtifactStore:
    """Data splits, models, runtime defenses, attacks and adversarial examples of one run."""

    def __init__(self, spec: GridSpec, options: RunOptions, limit: int | None) -> None:
        self.spec, self.opt, self.limit = spec, options, limit
        self.family = data.family_of(spec.dataset)
        self.device = torch.device("cpu")
        self.tracker: Any = None  # set by the runner: training curves go to MLflow
        self.test: data.Dataset | None = None
        self._train_set: data.Dataset | None = None
        self._models: dict[str, tuple[torch.nn.Module, str]] = {}
        self._runtime: dict[tuple[str, str], Any] = {}
        self._adv: dict[str, tuple[torch.Tensor, Any]] = {}
        self._failed_artifacts: dict[str, str] = {}

    # -- data ------------------------------------------------------------------------------------
    def setup_data(self) -> None:
        if self.test is None:
            self.test = data.load(self.spec.dataset, "test", self.opt.data_dir, self.limit, self.opt.download,
                                  self.opt.synthetic)

    def train_set(self) -> data.Dataset:
        """The training split (or the grid's stand-in: ``train_split``, from ``train_offset``)."""
        if self._train_set is None:
            spec = self.spec
            full = data.load(spec.dataset, spec.train_split, self.opt.data_dir, None, self.opt.download,
                             self.opt.synthetic)
            self._train_set = full.subset(spec.train_limit, offset=spec.train_offset)
            if not len(self._train_set):
                raise BenchError(f"{spec.name}: train_offset {spec.train_offset} leaves no {spec.train_split} "
                                 f"images (the split has {len(full)})")
        return self._train_set

    @property
    def loaded_train_size(self) -> int:
        """Images of the training split loaded so far (0 when no cell needed it)."""
        return 0 if self._train_set is None else len(self._train_set)

    def train_needed(self, todo: list[Cell]) -> str | None:
        """Why these cells need the training split (None when the test split is enough)."""
        for cell in todo:
            if cell.runtime_defense in defenses.DEFENSES and getattr(
                    defenses.DEFENSES.get(cell.runtime_defense), "needs_train_set", False):
                return f"runtime defense {cell.runtime_defense}"
            trained = [(cell.arch, cell.train_defense, cell.train_params, cell.seed)]
            if cell.threat == "transfer":
                sur = cell.surrogate
                trained.append((sur.get("arch", cell.arch), sur.get("defense", "standard"), sur.get("params", {}),
                                int(sur.get("seed", cell.seed + 1))))
            for arch, name, params, seed in trained:
                path = self.trained_model_path(arch, name, params, seed)
                if path is not None and not path.is_file():
                    return f"training {name}"
        return None

    # -- models ----------------------------------------------------------------------------------
    def trained_model_path(self, arch: str, defense: str, given: dict[str, Any], seed: int) -> Path | None:
        """Where the harness caches the model it trains for (arch, train-time defense, hyperparameters,
        seed); None for a model it does not train (a RobustBench zoo name, a user's source, an unknown name)."""
        if is_zoo_name(defense) or sources.is_provided(given) or defense not in defenses.DEFENSES:
            return None
        return Path(self.opt.cache_dir) / "models" / f"{self.model_key(arch, defense, given, seed)}.pt"

    def model_busy(self, cell: Cell) -> bool:
        """Whether another process is training the cell's model right now (its cache lock is held and
        the checkpoint not written yet): a ``--jobs`` worker then runs other cells first."""
        path = self.trained_model_path(cell.arch, cell.train_defense, cell.train_params, cell.seed)
        return path is not None and not path.is_file() and held_elsewhere(path)

    def model_key(self, arch: str, defense: str, given: dict[str, Any], seed: int) -> str:
        params = resolve_params(defenses.DEFENSES.get(defense), self.family, given, seed=seed)
        stand_in = {} if (self.spec.train_split, self.spec.train_offset) == ("train", 0) else {
            "train_split": self.spec.train_split, "train_offset": self.spec.train_offset}
        return config_hash({"dataset": self.spec.dataset, "train_limit": self.spec.train_limit, "arch": arch,
                            "defense": defense, "params": params, "version": __version__, **stand_in})

    def model(self, arch: str, defense: str, given: dict[str, Any], seed: int) -> tuple[torch.nn.Module, str]:
        """A trained model for (arch, train-time defense, hyperparameters, seed), cached on disk;
        ``robustbench:<Name>`` loads a RobustBench zoo model and a ``source`` entry a user's model
        (bench.spec.sources) instead."""
        if sources.is_provided(given):
            key = config_hash({"source": given})
            if key not in self._models:
                if given["source"] == "object":
                    if defense not in self.opt.provided_models:
                        raise BenchError(f"[train.{defense}] source = \"object\" needs the model from Python "
                                         "(bench.evaluate)")
                    model = self.opt.provided_models[defense]
                else:
                    model = user_model.load_model(given, self.spec.base_dir, self.test.num_classes,
                                                  self.test.x.shape[1])
                self._models[key] = (self._frozen(model), key)
            return self._models[key]
        if is_zoo_name(defense):
            key = config_hash({"zoo": defense, "params": given})
            if key not in self._models:
                zoo = load_robustbench(defense, self.spec.dataset, given.get("threat", "Linf"),
                                       Path(self.opt.cache_dir) / "robustbench")
                self._models[key] = (self._frozen(zoo), key)
            return self._models[key]
        factory = defenses.DEFENSES.get(defense)
        params = resolve_params(factory, self.family, given, seed=seed)
        key = self.model_key(arch, defense, given, seed)
        if key in self._models:
            return self._models[key]
        if key in self._failed_artifacts:
            raise BenchError(self._failed_artifacts[key])
        path = Path(self.opt.cache_dir) / "models" / f"{key}.pt"
        nc, in_ch = self.test.num_classes, self.test.x.shape[1]
        with cache_lock(path):  # concurrent Ray workers train a model once
            ckpt = torch_load_or_none(path)
            if ckpt is not None:
                model = factory(**params).build(models.create(arch, nc, in_ch))
                model.load_state_dict(ckpt["state_dict"])
            else:
                try:
                    model = self.train(arch, defense, factory, params, key, nc, in_ch)
                except BenchError as exc:
                    self._failed_artifacts[key] = str(exc)
                    raise
                models.save(model, path, arch, defense=defense, params=params)
        self._models[key] = (self._frozen(model), key)
        return self._models[key]

    def _frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """On the run's device, in eval mode, without parameter gradients (attacks need input ones only)."""
        model = model.to(self.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def train(self, arch: str, defense: str, factory: Any, params: dict[str, Any], key: str,
              nc: int, in_ch: int) -> torch.nn.Module:
        """Train a model with a train-time defense (resumable from its epoch checkpoints)."""
        torch.manual_seed(int(params.get("seed", 0)))
        model = models.create(arch, nc, in_ch)
        history: list[dict[str, float]] = []
        tqdm.write(f"training {arch} with {defense} {params}")
        resume_dir = Path(self.opt.cache_dir) / "training" / key
        trained = factory(**params).train(model, self.train_set(), device=self.device,
                                          callback=lambda e, m: history.append({"epoch": e, **m}),
                                          resume_dir=resume_dir)
        if self.tracker is not None:
            self.tracker.log_training(f"{defense} {arch}", {"arch": arch, "defense": defense, **params}, history)
        shutil.rmtree(resume_dir, ignore_errors=True)
        return trained

    # -- runtime defenses and attacks ------------------------------------------------------------
    def runtime(self, cell: Cell, model: torch.nn.Module, model_key: str) -> Any:
        """The cell's runtime defense, prepared once per (model, defense, hyperparameters)."""
        factory = defenses.DEFENSES.get(cell.runtime_defense)
        params = resolve_params(factory, self.family, cell.runtime_params, seed=cell.seed,
                                cache_dir=str(self.opt.cache_dir))
        key = (model_key, cell.runtime_defense + config_hash(params))
        if key not in self._runtime:
            defense = factory(**params)
            defense.prepare(model, self.train_set() if defense.needs_train_set else None)
            self._runtime[key] = defense
        return self._runtime[key]

    def attack(self, cell: Cell) -> tuple[Any, dict[str, Any]]:
        """The cell's attack, configured (seed-paper defaults, the grid's values, the cell's eps)."""
        factory = attacks.ATTACKS.get(cell.attack)
        params = resolve_params(factory, self.family, cell.attack_params, seed=cell.seed)
        if cell.eps is not None:
            params["eps"] = cell.eps
        built = factory(**params)
        return (built.full_budget() if cell.threat == "transfer" else built), params

    # -- adversarial examples --------------------------------------------------------------------
    def adv_key(self, cell: Cell) -> str:
        # The attack's parameters as they will run (class and per-dataset defaults resolved), so a change
        # of an attack's defaults in the code never reuses examples crafted under the old ones.
        built, params = self.attack(cell)
        resolved = {**params, **(built.config() if hasattr(built, "config") else {})}
        return config_hash({"cell": cell.cell_id, "resolved": resolved}) if cell.threat == "adaptive" else config_hash({
            "train": [cell.train_defense, cell.train_params], "attack": cell.attack, "params": cell.attack_params,
            "resolved": resolved,
            "eps": cell.eps, "threat": cell.threat, "surrogate": cell.surrogate, "limit": cell.limit,
            "seed": cell.seed, "dataset": cell.dataset, "arch": cell.arch, "version": __version__,
            # the trained models differ with their training images, so their adversarial examples do too
            **({} if cell.train_limit is None else {"train_limit": cell.train_limit}),
            **({} if (cell.train_split, cell.train_offset) == ("train", 0) else
               {"train_split": cell.train_split, "train_offset": cell.train_offset})})

    def adv_in_memory(self, key: str) -> tuple[torch.Tensor, Any] | None:
        return self._adv.get(key)

    def adv_on_disk(self, key: str) -> torch.Tensor | None:
        return torch_load_or_none(Path(self.opt.cache_dir) / "adv" / f"{key}.pt")

    def clean_predictions(self, parts: dict[str, Any], x: torch.Tensor, compute: Any) -> torch.Tensor:
        """A runtime defense's predictions on the clean test points, computed once per cache: a
        stream defense (RMC adapts at every point) pays a whole stream for them, and every cell of
        the defense shares them, in this process and in the other workers of ``--jobs``."""
        import hashlib

        digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        path = Path(self.opt.cache_dir) / "clean" / f"{config_hash({**parts, 'x': digest, 'version': __version__})}.pt"
        pred = torch_load_or_none(path)
        if pred is None:
            with cache_lock(path):  # a second worker waits for the first one's stream
                pred = torch_load_or_none(path)
                if pred is None:
                    pred = compute()
                    atomic_torch_save(pred.cpu(), path)
        return pred

    def keep_adv(self, key: str, x_adv: torch.Tensor, norm: Any, persist: bool) -> None:
        """Hold audited adversarial examples for later cells; ``persist`` also writes them to the cache
        (only defense-independent ones: an adaptive attack's examples belong to its one cell)."""
        self._adv[key] = (x_adv.cpu(), norm)
        if persist:
            atomic_torch_save(x_adv.cpu(), Path(self.opt.cache_dir) / "adv" / f"{key}.pt")
