"""The all-to-all digits table: one multimarginal model against six two-marginal models (one per edge).

    python experiments/multimarginal/evaluate.py --runs runs/multimarginal --seed 0 --out results-seed0.json

Reads RUNS/multimarginal/seedS/checkpoints/last.ckpt and, where they exist, the two-marginal models
RUNS/pair-i-j/seedS/checkpoints/last.ckpt (K = 2 models of marginals i < j, trained on their edge only;
train.sh writes both). Marginals: 0 Gaussian, 1 upright, 2 rotated by 90 degrees, 3 inverted digits.

For the 180 validation digits x and each ordered pair i -> j of data marginals: the share whose label the
shipped digits classifier gives to T_j^{-1}(translate_{i->j}(T_i(x))), and the cycle RMSE
|translate_{j->i}(translate_{i->j}(T_i x)) - T_i x| (per pixel, in [-1, 1] units). For each data marginal
j: digits FID of T_j^{-1}(generate_j) from N seeds against N training digits, with the real-vs-real floor.
Every route is the ODE (Heun, ``--steps`` steps per edge on ``--grid``, EMA weights; ``--method dopri5`` for
the adaptive reference solve). ``--grid cosine`` puts the steps at s = sin^2(pi u / 2), u uniform: the same
NFE, denser near both vertices where the Brownian gamma's dgamma/ds grows like 1/sqrt(s) and 1/sqrt(1 - s).
``--fid-samples 0`` skips generation and FID (the class-kept and cycle-RMSE rows only). The multimarginal
model's routes (``--paths``): ``edge``, ``through-base`` (via the Gaussian vertex), ``through-third``
(i -> k -> j via the data marginal k that is neither end; translations only, generation is the edge's) and
``through-interior`` (one leg from i to j bending toward that same k by each ``--kappa``, the
``InteriorPath`` of simplex_paths.py; translations only).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import yaml

from si_lightning.commands.checkpoints import load_model
from si_lightning.data import DigitsDataModule
from si_lightning.data.base import to_model_input
from si_lightning.data.datasets import fetch
from si_lightning.data.multimarginal import MARGINAL_TRANSFORMS
from si_lightning.interpolants import route
from si_lightning.metrics import frechet_distance
from si_lightning.metrics.digits import DigitsFeatureExtractor
from si_lightning.metrics.quantize import quantize_to_uint8
from si_lightning.sampling import ODESampler, base_noise, translate

NAMES = ("gaussian", "identity", "rotate90", "invert")
DATA_MARGINALS = (1, 2, 3)


def forward(marginal: int, x: torch.Tensor) -> torch.Tensor:
    return MARGINAL_TRANSFORMS[NAMES[marginal]].forward(x)


def inverse(marginal: int, x: torch.Tensor) -> torch.Tensor:
    return MARGINAL_TRANSFORMS[NAMES[marginal]].inverse(x)


class Translator:
    """Moves samples between global vertices with the multimarginal model or the matching two-marginal one."""

    def __init__(
        self,
        multimarginal,
        pairs: dict[tuple[int, int], object],
        sampler: ODESampler,
        path: str,
        kappa: float | None = None,
    ) -> None:
        self.multimarginal, self.pairs, self.sampler, self.path, self.kappa = multimarginal, pairs, sampler, path, kappa

    def __call__(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        with torch.no_grad():
            if self.multimarginal is not None and self.path in ("through-third", "through-interior"):
                # Via (or toward) the data marginal that is neither end (only between data marginals).
                third = next(k for k in DATA_MARGINALS if k not in (start, end))
                if self.path == "through-third":
                    legs = route(4, start, end, "through-base", base=third)
                else:
                    legs = route(4, start, end, "through-interior", via=third, kappa=self.kappa)
                return translate(self.multimarginal.simplex_fields(), self.sampler, x, legs)[0]
            if self.multimarginal is not None:
                legs = route(4, start, end, self.path)
                return translate(self.multimarginal.simplex_fields(), self.sampler, x, legs)[0]
            low, high = sorted((start, end))
            model = self.pairs[(low, high)]
            local = route(2, 0 if start == low else 1, 1 if end == high else 0, "edge")
            return translate(model.simplex_fields(), self.sampler, x, local)[0]


def training_coupling(config: Path) -> str:
    """How the marginals of a training row were drawn, from the run's saved config (``independent`` by default)."""
    if not config.is_file():
        return "unknown"
    data = yaml.safe_load(config.read_text()).get("data", {})
    return data.get("init_args", {}).get("coupling", "independent")


def validation_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 180 validation digits (180, 1, 8, 8) in [-1, 1] and their labels."""
    datamodule = DigitsDataModule(image_size=8)
    dataset = datamodule.dataset("val")
    images, labels, _ = fetch(dataset, list(range(len(dataset))))
    return to_model_input(images), labels


def classify(extractor: DigitsFeatureExtractor, images: torch.Tensor) -> torch.Tensor:
    return extractor.classify(quantize_to_uint8(images)).argmax(dim=1)


def evaluate(
    translator: Translator, extractor, digits, labels, real, floor_reference, fid_samples, generation: bool = True
) -> dict:
    row: dict[str, float] = {}
    for i, j in itertools.permutations(DATA_MARGINALS, 2):
        source = forward(i, digits)
        moved = translator(source, i, j)
        kept = (classify(extractor, inverse(j, moved.clamp(-1, 1))) == labels).float().mean().item()
        back = translator(moved, j, i)
        row[f"class kept {i}->{j}"] = kept
        row[f"cycle RMSE {i}->{j}->{i}"] = (back - source).pow(2).mean().sqrt().item()
    # through-third and through-interior are routes between data marginals only: generation is the edge's
    if not generation or fid_samples == 0:
        return row
    noise = base_noise(list(range(fid_samples)), (1, 8, 8))
    real_features = extractor.extract(quantize_to_uint8(real))
    for j in DATA_MARGINALS:
        generated = inverse(j, translator(noise, 0, j).clamp(-1, 1))
        row[f"FID {j}"] = frechet_distance(extractor.extract(quantize_to_uint8(generated)), real_features)
    floor_features = extractor.extract(quantize_to_uint8(floor_reference))
    row["FID floor (real vs real)"] = frechet_distance(floor_features, real_features)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="the OUT folder of train.sh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="Heun steps per edge")
    parser.add_argument("--grid", choices=("uniform", "cosine"), default="uniform", help="Heun's time grid per edge")
    parser.add_argument(
        "--method", choices=("heun", "dopri5"), default="heun", help="dopri5: adaptive, atol = rtol = 1e-5"
    )
    parser.add_argument("--fid-samples", type=int, default=500, help="0 skips generation and FID")
    parser.add_argument("--models", choices=("all", "multimarginal", "pairs"), default="all", help="which rows")
    parser.add_argument(
        "--paths",
        default="edge,through-base",
        help="the multimarginal model's routes, of edge, through-base, through-third (via the third data "
        "marginal: translations only), through-interior (bending toward the third data marginal by each "
        "--kappa: translations only)",
    )
    parser.add_argument(
        "--kappa",
        default="0.5",
        help="through-interior: comma-separated bends in (0, 1), the share of the third marginal at the midpoint",
    )
    parser.add_argument("--out", required=True, help="results JSON")
    options = parser.parse_args()
    torch.set_grad_enabled(False)
    runs = Path(options.runs)
    sampler = ODESampler(options.method, steps=options.steps, grid=options.grid)
    extractor = DigitsFeatureExtractor()
    digits, labels = validation_digits()
    datamodule = DigitsDataModule(image_size=8)
    generator = torch.Generator().manual_seed(options.seed)
    real = floor_reference = None
    if options.fid_samples > 0:
        real = datamodule.real_samples(options.fid_samples, generator, split="train")
        generator = torch.Generator().manual_seed(options.seed)
        floor_reference = datamodule.real_samples(
            options.fid_samples, generator, split="train", skip=options.fid_samples
        )
    checkpoint = "checkpoints/last.ckpt"
    run = runs / "multimarginal" / f"seed{options.seed}"
    multimarginal = load_model(run / checkpoint)
    pairs = {}
    for low, high in itertools.combinations(range(4), 2):
        path = runs / f"pair-{low}-{high}" / f"seed{options.seed}" / checkpoint
        if path.is_file():
            pairs[(low, high)] = load_model(path)
    results = {
        "seed": options.seed,
        "coupling": training_coupling(run / "config.yaml"),
        "sampler": repr(sampler),
        "steps_per_edge": options.steps,
        "fid_samples": options.fid_samples,
        "validation_digits": int(digits.shape[0]),
        "classifier accuracy, upright validation digits": (classify(extractor, digits) == labels).float().mean().item(),
        "models": {},
    }
    arguments = (extractor, digits, labels, real, floor_reference, options.fid_samples)
    paths = [path.strip() for path in options.paths.split(",") if path.strip()]
    known = ("edge", "through-base", "through-third", "through-interior")
    unknown = sorted(set(paths) - set(known))
    if unknown:
        parser.error(f"--paths: unknown route(s) {', '.join(unknown)}; expected {', '.join(known)}")
    kappas = [float(kappa) for kappa in options.kappa.split(",") if kappa.strip()]
    if "through-interior" in paths and not all(0 < kappa < 1 for kappa in kappas):
        parser.error(f"--kappa: bends in (0, 1) expected, got {options.kappa}")
    for path in paths if options.models != "pairs" else ():
        # One row per bend for through-interior; the other routes have none.
        for kappa in kappas if path == "through-interior" else [None]:
            translator = Translator(multimarginal, {}, sampler, path, kappa)
            name = f"multimarginal, {path}" + ("" if kappa is None else f", kappa {kappa:g}")
            generation = path not in ("through-third", "through-interior")
            results["models"][name] = evaluate(translator, *arguments, generation=generation)
    if len(pairs) == 6 and options.models != "multimarginal":
        results["models"]["six two-marginal models"] = evaluate(Translator(None, pairs, sampler, "edge"), *arguments)
    Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
    for name, row in results["models"].items():
        print(name, json.dumps({key: round(value, 3) for key, value in row.items()}))


if __name__ == "__main__":
    main()
