from __future__ import annotations

import math

import pytest
import torch

from nbr_contrast.monitors.knn import knn_accuracy, knn_predict


def brute_force_scores(
    train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, k: int, tau: float, c: int
) -> torch.Tensor:
    scores = torch.zeros(test.shape[0], c, dtype=torch.float64)
    for i in range(test.shape[0]):
        q = test[i].double()
        sims = []
        for j in range(train.shape[0]):
            t = train[j].double()
            sims.append((float(q @ t) / (float(q.norm()) * float(t.norm())), int(train_y[j])))
        sims.sort(key=lambda pair: pair[0], reverse=True)
        for sim, label in sims[:k]:
            scores[i, label] += math.exp(sim / tau)
    return scores


@pytest.fixture
def data() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(60, 8, generator=gen) * 3.0
    train_y = torch.randint(0, 4, (60,), generator=gen)
    test = torch.randn(17, 8, generator=gen)
    test_y = torch.randint(0, 4, (17,), generator=gen)
    return train, train_y, test, test_y


@pytest.mark.parametrize("k", [1, 7, 60])
def test_knn_predict_matches_brute_force(data: tuple[torch.Tensor, ...], k: int) -> None:
    train, train_y, test, _ = data
    scores = knn_predict(train, train_y, test, k, 0.1, 4, chunk_size=5)
    expected = brute_force_scores(train, train_y, test, k, 0.1, 4)
    assert scores.shape == (17, 4)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)


def test_knn_accuracy_several_k(data: tuple[torch.Tensor, ...]) -> None:
    train, train_y, test, test_y = data
    accs = knn_accuracy(train, train_y, test, test_y, [1, 5, 20], 0.07, 4)
    assert list(accs) == [1, 5, 20]
    for k, acc in accs.items():
        pred = brute_force_scores(train, train_y, test, k, 0.07, 4).argmax(dim=1)
        assert acc == pytest.approx(100.0 * float((pred == test_y).double().mean()))


def test_knn_accuracy_perfect_on_train_set(data: tuple[torch.Tensor, ...]) -> None:
    train, train_y, _, _ = data
    assert knn_accuracy(train, train_y, train, train_y, [1], 0.1, 4) == {1: 100.0}


def test_k_larger_than_train_set_names_k(data: tuple[torch.Tensor, ...]) -> None:
    train, train_y, test, test_y = data
    with pytest.raises(ValueError, match="k=61"):
        knn_predict(train, train_y, test, 61, 0.1, 4)
    with pytest.raises(ValueError, match="k=100"):
        knn_accuracy(train, train_y, test, test_y, [5, 100], 0.1, 4)
