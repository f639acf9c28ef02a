"""The label-shared coupling of the multimarginal interpolant (docs/math.md section 12).

Against closed forms: for class-mixture Gaussian marginals, ``GaussianMixtureMarginals`` gives the exact
E[x_k | x(alpha)] under either coupling; it minimises the loss of its own coupling's draws, and with the
label-shared fields an edge keeps the class where the independent fields change it. On the digits:
``MultimarginalDataModule(coupling="label-shared")`` gives each row K images of one class and leaves
every marginal's law that of the data set.
"""

from __future__ import annotations

import pytest
import torch

from si_lightning.analytic_multimarginal import GaussianMarginals, GaussianMixtureMarginals
from si_lightning.data import DigitsDataModule, MultimarginalDataModule
from si_lightning.data.base import to_model_input
from si_lightning.data.datasets import fetch
from si_lightning.data.multimarginal import same_class_partners
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant
from si_lightning.interpolants.simplex import MixedSimplex
from si_lightning.interpolants.simplex_paths import EdgePath
from si_lightning.sampling import ODESampler
from si_lightning.sampling.multimarginal import OracleSimplexFields, translate

COUPLINGS = ("label-shared", "independent")


def two_class_marginals(coupling: str, gamma: str = "brownian", scale: float = 0.5) -> GaussianMixtureMarginals:
    """K = 3 in d = 2, two equally likely classes of standard deviation 0.3: vertex 0 N(0, I) for both,
    vertex 1 class 0 at (-3, 0) and class 1 at (3, 0), vertex 2 class 0 at (3, 6) and class 1 at (-3, 12).
    Class 0's nearest cluster of vertex 2 is class 1's, so a transport that moves little swaps the classes;
    along the edge 1 -> 2 the class means stay 2.7 apart (at s = 0.4), 5 standard deviations of x(alpha)."""
    interpolant = MultimarginalInterpolant(3, gamma=gamma, gamma_scale=scale, endpoint_eps=1e-4)
    means = torch.tensor(
        [[[0.0, 0.0], [0.0, 0.0]], [[-3.0, 0.0], [3.0, 0.0]], [[3.0, 6.0], [-3.0, 12.0]]], dtype=torch.float64
    )
    covariances = torch.eye(2, dtype=torch.float64).expand(3, 2, 2, 2).clone()
    covariances[1:] *= 0.09
    weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
    return GaussianMixtureMarginals(weights, means, covariances, interpolant, coupling=coupling)


def test_one_class_is_the_gaussian_oracle_and_the_score_is_the_gradient():
    """With one class both couplings are the independent Gaussian marginals; the score is grad log rho."""
    oracle = two_class_marginals("label-shared")
    one = GaussianMixtureMarginals(
        torch.ones(1, dtype=torch.float64), oracle.means[:, :1], oracle.covariances[:, :1], oracle.interpolant
    )
    plain = GaussianMarginals(oracle.means[:, 0], oracle.covariances[:, 0], oracle.interpolant)
    generator = torch.Generator().manual_seed(0)
    alpha = MixedSimplex()(64, 3, dtype=torch.float64, generator=generator)
    x = 3 * torch.randn(64, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(one.output(alpha, x), plain.output(alpha, x), atol=1e-12, rtol=1e-12)
    # grad log sum_t w_t N(x; mu_t, Sigma_t) by autograd against the closed form.
    for coupling in COUPLINGS:
        mixture = two_class_marginals(coupling)
        point = x.clone().requires_grad_(True)
        density = sum(
            weight * torch.distributions.MultivariateNormal(*component.moments(alpha)).log_prob(point).exp()
            for weight, component in zip(mixture.tuple_weights, mixture.components, strict=True)
        )
        (gradient,) = torch.autograd.grad(density.log().sum(), point)
        torch.testing.assert_close(mixture.score(alpha, x), gradient, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_each_couplings_oracle_minimises_its_own_loss(coupling):
    """Draws of ``coupling``: its exact fields o are the regression E[targets | x(alpha)], so for the other
    coupling's fields f the paired loss difference is |f - o|^2 / d plus the cross term 2 (f - o).(o - y) / d,
    which has mean zero (checked to 4 standard errors) while the difference itself is positive (> 5 SE)."""
    right, other = two_class_marginals(coupling), two_class_marginals(next(c for c in COUPLINGS if c != coupling))
    interpolant = right.interpolant
    generator = torch.Generator().manual_seed(3)
    count = 20_000
    xs, _ = right.sample(count, generator)
    z = torch.randn(count, 2, generator=generator, dtype=torch.float64)
    alpha = MixedSimplex()(count, 3, dtype=torch.float64, generator=generator)
    sample = interpolant.sample(xs, alpha, z)
    best, wrong = right.output(alpha, sample.x), other.output(alpha, sample.x)
    difference = interpolant.loss(wrong, sample) - interpolant.loss(best, sample)
    assert difference.mean() > 5 * difference.std() / count**0.5
    targets = torch.cat([*xs, z], dim=1)
    cross = 2 * ((wrong - best) * (best - targets)).sum(1) / 2  # d = 2
    torch.testing.assert_close(difference, (wrong - best).pow(2).sum(1) / 2 + cross, atol=1e-10, rtol=1e-10)
    assert cross.mean().abs() < 4 * cross.std() / count**0.5, (cross.mean(), cross.std() / count**0.5)


def test_label_shared_edges_keep_the_class_and_independent_edges_split_it():
    """ODE (dopri5, 1e-6) along the edge 1 -> 2 from 500 class-labelled draws of vertex 1; the class of an
    arrival is its nearest class mean of vertex 2 (clusters 6.7 apart at standard deviation 0.3, so the
    reading errs with probability < 1e-20). Label-shared fields carry each class to its own cluster: with
    the class means 5 standard deviations apart all along the edge, at most a few in 10^4 may cross
    (bound 1 %). Under the independent coupling each cluster of vertex 1 is two tuple components (c, 0) and
    (c, 1) of weight 1/2 that separate along the edge, so the flow splits it in halves: the class is kept
    with probability w_c = 1/2, checked within 5 binomial standard errors sqrt(0.25 / 500) = 0.022."""
    sampler = ODESampler("dopri5", atol=1e-6, rtol=1e-6)
    count = 500
    kept = {}
    for coupling in COUPLINGS:
        oracle = two_class_marginals(coupling)
        xs, classes = two_class_marginals("label-shared").sample(count, torch.Generator().manual_seed(5))
        moved, _ = translate(OracleSimplexFields(oracle), sampler, xs[1], [EdgePath(3, 1, 2)])
        arrival = torch.cdist(moved, oracle.means[2]).argmin(dim=1)
        kept[coupling] = (arrival == classes[:, 1]).double().mean().item()
        # Both transports reproduce vertex 2's law: half the arrivals in each cluster, within 5 binomial SE.
        assert abs(arrival.double().mean().item() - 0.5) < 5 * (0.25 / count) ** 0.5
    assert kept["label-shared"] >= 0.99, kept
    assert abs(kept["independent"] - 0.5) < 5 * (0.25 / count) ** 0.5, kept


# ------------------------------------------------------------------------------------------- the digits data


def digits_module(coupling: str = "label-shared", batch_size: int = 64) -> MultimarginalDataModule:
    datamodule = MultimarginalDataModule(DigitsDataModule(image_size=8), batch_size=batch_size, coupling=coupling)
    datamodule.setup()
    return datamodule


def source_rows(datamodule: MultimarginalDataModule, xs: tuple[torch.Tensor, ...], images: torch.Tensor) -> list:
    """For each data marginal k, the batch row (batch,) whose image, transformed, is marginal k's sample."""
    rows = []
    for k in range(1, datamodule.num_marginals):
        upright = datamodule.inverse(k, xs[k]).flatten(1)
        equal = (upright[:, None] == images.flatten(1)[None]).all(dim=2)  # (batch, batch)
        assert bool(equal.any(dim=1).all()), f"marginal {k} holds an image that is not in the batch"
        rows.append(equal.float().argmax(dim=1))
    return rows


def test_label_shared_rows_hold_distinct_images_of_one_class():
    """Each data marginal of a validation batch (64 rows, 10 classes) is an image of the row's class, each
    marginal is a permutation of the batch (its law is the batch's), and rows whose class has >= 3 images in
    the batch get 3 different images."""
    datamodule = digits_module()
    images, labels, index = next(iter(datamodule.val_dataloader()))
    batch = datamodule.on_after_batch_transfer((images, labels, index))
    images = to_model_input(images)
    rows = source_rows(datamodule, batch.xs, images)
    for k, source in enumerate(rows, start=1):
        assert torch.equal(labels[source], labels), f"marginal {k} mixes classes"
    partners = same_class_partners(labels, range(4), torch.Generator().manual_seed(0))
    for shift in range(4):
        assert torch.equal(partners[shift].sort().values, torch.arange(64))  # a permutation of the rows
    counts = torch.bincount(labels)[labels]
    many = counts >= 3
    assert bool(many.any())
    distinct = (rows[0] != rows[1]) & (rows[0] != rows[2]) & (rows[1] != rows[2])
    assert bool(distinct[many].all())
    # The independent coupling mixes classes: at least one row of 64 pairs two classes.
    independent = digits_module("independent").on_after_batch_transfer((images, labels, index))
    rolled = source_rows(datamodule, independent.xs, images)
    assert not torch.equal(labels[rolled[0]], labels[rolled[1]])


def test_label_shared_marginals_keep_the_class_frequencies_of_the_data():
    """80 training batches of 64 (each a uniform draw of distinct training digits, as the training order
    is), coupled with their own seeds: each data marginal's class frequencies match the training set's
    within 4 binomial standard errors sqrt(p (1 - p) / 5120) (rows of different batches are independent,
    rows of one batch negatively correlated, so this bounds the error), and its images are uniform: over
    the 80 batches each image appears as often in every marginal as among the rows."""
    datamodule = digits_module()
    dataset = datamodule.dataset("train")
    train_labels = torch.as_tensor(dataset.labels)
    frequencies = torch.bincount(train_labels, minlength=10).double() / len(train_labels)
    generator = torch.Generator().manual_seed(7)
    counts = torch.zeros(3, 10, dtype=torch.float64)
    batches, size = 80, 64
    for number in range(batches):
        chosen = torch.randperm(len(dataset), generator=generator)[:size]
        images, labels, index = fetch(dataset, chosen.tolist())
        batch = datamodule.on_after_batch_transfer((images, labels, index, 1000 + number))
        rows = source_rows(datamodule, batch.xs, to_model_input(images))
        for k, source in enumerate(rows):
            assert torch.equal(labels[source], labels)
            counts[k] += torch.bincount(labels[source], minlength=10)
            # The same images as the rows, each once: the marginal of the batch is the batch.
            assert torch.equal(source.sort().values, torch.arange(size))
    draws = batches * size
    tolerance = 4 * (frequencies * (1 - frequencies) / draws).sqrt()
    assert bool(((counts / draws - frequencies).abs() < tolerance).all()), counts / draws - frequencies


def test_bad_coupling_is_refused():
    with pytest.raises(ValueError, match="coupling must be one of independent, label-shared, got 'paired'"):
        MultimarginalDataModule(DigitsDataModule(image_size=8), coupling="paired")
