"""ODE and SDE samplers, encoding and likelihood (docs/math.md sections 4-5): plain PyTorch, no Lightning.

Every sampler drives a ``Fields`` object (velocity and, where needed, score), so a trained network
(``NetworkFields``, any prediction through the conversions) and the Gaussian-mixture oracle
(``OracleFields``, or the oracle itself) run through the same code.
"""

from si_lightning.sampling.conversion import ConvertedFields, convert_interpolant
from si_lightning.sampling.design import FittedGrid, fit_lipschitz_grid, fit_local_error_grid
from si_lightning.sampling.diffusion import DIFFUSIONS, Diffusion
from si_lightning.sampling.divergence import DIVERGENCES, PROBES
from si_lightning.sampling.fields import Fields, FieldsWrapper, NetworkFields, OracleFields, as_fields
from si_lightning.sampling.grids import GRIDS, EDMGrid, LogSNRGrid, TimeGrid
from si_lightning.sampling.guidance import GuidedFields
from si_lightning.sampling.likelihood import LikelihoodResult, bits_per_dim, log_likelihood, sde_log_likelihood
from si_lightning.sampling.multimarginal import (
    NetworkSimplexFields,
    OracleSimplexFields,
    PathFields,
    SimplexFields,
    translate,
)
from si_lightning.sampling.ode import ODESampler, SampleResult
from si_lightning.sampling.sde import LAST_STEPS, SDE_METHODS, SDESampler
from si_lightning.sampling.search import (
    SEARCHES,
    BeamSearch,
    BestOfN,
    RolloverBudgetForcing,
    Search,
    SearchResult,
    SequentialMonteCarlo,
)
from si_lightning.sampling.seeds import NoiseSource, base_noise, generators_from_seeds
from si_lightning.sampling.snr import log_snr, time_of_log_snr
from si_lightning.sampling.solvers import ODE_METHODS

__all__ = [
    "DIFFUSIONS",
    "DIVERGENCES",
    "GRIDS",
    "LAST_STEPS",
    "ODE_METHODS",
    "PROBES",
    "SDE_METHODS",
    "SEARCHES",
    "BeamSearch",
    "BestOfN",
    "ConvertedFields",
    "Diffusion",
    "EDMGrid",
    "Fields",
    "FieldsWrapper",
    "FittedGrid",
    "GuidedFields",
    "LikelihoodResult",
    "LogSNRGrid",
    "NetworkFields",
    "NetworkSimplexFields",
    "NoiseSource",
    "ODESampler",
    "OracleFields",
    "OracleSimplexFields",
    "PathFields",
    "RolloverBudgetForcing",
    "SDESampler",
    "SampleResult",
    "Search",
    "SearchResult",
    "SequentialMonteCarlo",
    "SimplexFields",
    "TimeGrid",
    "as_fields",
    "base_noise",
    "bits_per_dim",
    "convert_interpolant",
    "fit_lipschitz_grid",
    "fit_local_error_grid",
    "generators_from_seeds",
    "log_likelihood",
    "log_snr",
    "sde_log_likelihood",
    "time_of_log_snr",
    "translate",
]
