from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from omegaconf import DictConfig

from nbr_contrast.app.build import build_method

from .helpers import first_batch, fit_small

SMALL = [
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=64",
    "method.knn_k=10",
]


def test_snclr_mocov3_and_learned_attention_fit(tiny_cfg: Callable[..., DictConfig]) -> None:
    snclr = ["method=snclr", "method.k=3"]
    for extra in (snclr, ["method=mocov3"], [*snclr, "method.attention=learned"]):
        method, trainer = fit_small(tiny_cfg(*SMALL, *extra))
        assert trainer.global_step == 2
        assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert method.attention is not None
    cfg = tiny_cfg(*SMALL, *snclr, "method.attention=learned")
    L.seed_everything(int(cfg.seed))
    initial = build_method(cfg)
    trained = method.attention.query.weight.detach()
    assert not torch.allclose(initial.attention.query.weight, trained)


def test_mocov3_has_no_bank(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, _ = fit_small(tiny_cfg(*SMALL, "method=mocov3"))
    assert method.neighbours is not None and method.neighbours.banks == {}


def test_neighbours_never_include_own_index(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(
        *SMALL,
        "method=snclr",
        "method.k=3",
        "trainer.limit_train_batches=6",
        "data.batch_size=8",
    )
    method, _ = fit_small(cfg)
    batch = first_batch(cfg)
    keys = method.keys(batch["views"][1])
    found = method.bank("support").search(keys, 3, exclude_ids=batch["sample_id"])
    assert not (found.payloads["sample_id"] == batch["sample_id"][:, None]).any()


def test_weights_stats_logged(tiny_cfg: Callable[..., DictConfig]) -> None:
    _, trainer = fit_small(tiny_cfg(*SMALL, "method=snclr", "method.k=3"))
    metrics = trainer.callback_metrics
    assert 0.0 < float(metrics["train/weight_mean_epoch"]) <= 1.0
    assert float(metrics["train/weight_entropy_epoch"]) >= 0.0
    assert 0.0 <= float(metrics["train/nbr/agreement_epoch"]) <= 1.0


def test_snclr_with_a_vit_backbone(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(
        *SMALL,
        "method=snclr",
        "method.k=3",
        "backbone=vit_tiny",
        "optim=adamw",
        "data.batch_size=8",
        "method.knn_k=5",
    )
    method, trainer = fit_small(cfg)
    assert trainer.global_step == 2
    assert method.feature_dim == 192
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def linear_widths(head: torch.nn.Module) -> list[int]:
    return [m.out_features for m in head if isinstance(m, torch.nn.Linear)]


def ends_in_bn(head: torch.nn.Module) -> bool:
    return isinstance(list(head)[-1], torch.nn.BatchNorm1d)


def test_moco_v3_heads_follow_the_backbone(tiny_cfg: Callable[..., DictConfig]) -> None:
    # moco-v3 moco/builder.py: MoCo_ResNet 2-layer projector, predictor without last BN;
    # MoCo_ViT 3-layer projector, predictor with last BN (last BNs without affine)
    for method in ("mocov3", "snclr"):
        resnet = build_method(tiny_cfg(f"method={method}"))
        assert linear_widths(resnet.projector) == [4096, 256] and ends_in_bn(resnet.projector)
        assert not list(resnet.projector)[-1].affine
        assert linear_widths(resnet.predictor) == [4096, 256]
        assert not ends_in_bn(resnet.predictor)
        vit = build_method(tiny_cfg(f"method={method}", "backbone=vit_tiny"))
        assert linear_widths(vit.projector) == [4096, 4096, 256] and ends_in_bn(vit.projector)
        assert linear_widths(vit.predictor) == [4096, 256] and ends_in_bn(vit.predictor)


def test_vit_heads_follow_the_architecture_not_its_name(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    # a timm DeiT is a ViT whose name does not start with "vit"; a ConvNeXt is convolutional
    deit = ["backbone=timm", "backbone.name=deit_tiny_patch16_224", "+backbone.kwargs.patch_size=4"]
    vit = build_method(tiny_cfg("method=mocov3", *deit, "+backbone.kwargs.depth=1"))
    assert linear_widths(vit.projector) == [4096, 4096, 256] and ends_in_bn(vit.predictor)
    conv = build_method(tiny_cfg("method=mocov3", "backbone=timm", "backbone.name=convnext_atto"))
    assert linear_widths(conv.projector) == [4096, 256] and not ends_in_bn(conv.predictor)


def test_mocov3_heads_have_no_bias_as_the_official_builder() -> None:
    """moco-v3 ``builder.py`` ``_build_mlp`` and solo-learn ``mocov3.py`` build every linear
    layer of the projector and the predictor with ``bias=False``; 0.1 checkpoints had a
    predictor bias and load with ``predictor_bias=True``."""
    from nbr_contrast import MoCoV3

    heads = {"proj_hidden_dim": 16, "pred_hidden_dim": 16, "proj_output_dim": 8}
    model = MoCoV3(backbone="resnet18", **heads)
    linears = [m for h in (model.projector, model.predictor) for m in h.modules()]
    linears = [m for m in linears if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 and all(m.bias is None for m in linears)
    old = MoCoV3(backbone="resnet18", predictor_bias=True, **heads)
    assert old.predictor[-1].bias is not None and "predictor.3.bias" in old.state_dict()
