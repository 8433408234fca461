"""The neighbour diagnostics against a slow reference written with Python loops."""

from __future__ import annotations

import math

import torch

from nbr_contrast.monitors.neighbour_quality import neighbour_quality, spread


def slow(labels, ids, nb_labels, nb_ids, nb_steps, step, top1, positive) -> dict[str, float]:
    """Each diagnostic by its definition, one query and one neighbour at a time."""
    agree, known = 0, 0
    own = 0
    ages = []
    for i in range(len(labels)):
        for j in range(len(nb_labels[i])):
            if labels[i] >= 0:
                known += 1
                agree += int(nb_labels[i][j] == labels[i])
            own += int(nb_ids[i][j] == ids[i])
            if nb_steps[i][j] >= 0:
                ages.append(step - nb_steps[i][j])
    count = sum(len(row) for row in nb_ids)
    return {
        "agreement": agree / max(known, 1),
        "self_retrieval": own / count,
        "age_mean": sum(ages) / max(len(ages), 1),
        "age_max": max(ages, default=0),
        "top1_sim": sum(top1) / len(top1),
        "positive_sim": sum(positive) / len(positive),
    }


def test_every_diagnostic_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(0)
    b, k, step = 12, 4, 40
    labels = torch.randint(-1, 3, (b,), generator=g)  # some queries unlabelled
    ids = torch.arange(100, 100 + b)
    nb_labels = torch.randint(-1, 3, (b, k), generator=g)
    nb_ids = torch.randint(100, 100 + b, (b, k), generator=g)
    nb_steps = torch.randint(-1, step, (b, k), generator=g)
    top1, positive = torch.rand(b, generator=g), torch.rand(b, generator=g)
    got = neighbour_quality(labels, ids, nb_labels, nb_ids, nb_steps, step, top1, positive)
    want = slow(
        labels.tolist(),
        ids.tolist(),
        nb_labels.tolist(),
        nb_ids.tolist(),
        nb_steps.tolist(),
        step,
        top1.tolist(),
        positive.tolist(),
    )
    assert set(got) == set(want)
    for name, value in want.items():
        assert math.isclose(float(got[name]), value, rel_tol=1e-6, abs_tol=1e-6), name


def test_own_entries_give_self_retrieval_one_and_top1_is_a_vector() -> None:
    ids = torch.tensor([3, 5, 9])
    got = neighbour_quality(torch.tensor([0, 1, -1]), ids, torch.tensor([0, 1, 1]), ids.clone())
    assert float(got["self_retrieval"]) == 1.0
    assert float(got["agreement"]) == 1.0  # the unlabelled query does not count
    assert "age_mean" not in got and "top1_sim" not in got


def test_spread_is_one_on_the_sphere_and_zero_at_collapse() -> None:
    g = torch.Generator().manual_seed(1)
    uniform = torch.randn(4096, 64, generator=g)
    assert abs(float(spread(uniform)) - 1.0) < 0.02
    point = torch.randn(1, 64, generator=g).repeat(256, 1) * torch.rand(256, 1, generator=g)
    assert float(spread(point)) < 1e-3
    cap = torch.randn(1, 64, generator=g) + 0.1 * torch.randn(4096, 64, generator=g)
    assert 0.05 < float(spread(cap)) < 0.5  # crowded into a small cap
