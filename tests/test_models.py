"""The model zoo's CIFAR ResNet: He et al.'s sizes, its parameter-free shortcut, and a
real CIFAR-10 batch through it."""
import pytest
import torch

from bingo.engine.targets import select_targets
from bingo.harness.models import BasicBlock, build_model, resnet


def test_resnet20_has_he_et_al_s_shape_and_prunable_layers(cifar10):
    model = build_model("resnet20")
    assert sum(p.numel() for p in model.parameters()) == 269722  # "0.27M"
    targets = select_targets(model)
    assert len(targets) == 20 and targets[-1].name == "fc.weight"  # 19 convs + the classifier
    assert sum(t.shape.numel() for t in targets) == 268336
    x = cifar10.train.images[:16]
    out = model(x)
    assert out.shape == (16, 10) and torch.isfinite(out).all()
    assert len(select_targets(resnet(32))) == 32  # 31 convs + the classifier
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet(21)


def test_a_widening_block_s_shortcut_subsamples_and_zero_pads(fresh_seed):
    torch.manual_seed(fresh_seed)
    block = BasicBlock(4, 8, stride=2).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()  # the residual branch adds bn2's bias only
        block.bn2.bias.copy_(torch.randn(8))
    x = torch.randn(3, 4, 9, 7)
    out = block(x)
    short = torch.cat([x[:, :, ::2, ::2], torch.zeros(3, 4, 5, 4)], 1)
    bias = block.bn2.bias - block.bn2.running_mean * block.bn2.weight / torch.sqrt(
        block.bn2.running_var + block.bn2.eps)
    assert torch.allclose(out, torch.relu(short + bias.view(1, 8, 1, 1)), atol=1e-6)


def test_char_gpt_is_causal_and_starts_at_chance_on_real_text(data_dir, fresh_seed):
    from bingo.harness.data import load_text
    from bingo.harness.gpt import sequence_loss
    text = load_text(data_dir)
    torch.manual_seed(fresh_seed)
    model = build_model("char-gpt").eval()
    g = torch.Generator().manual_seed(fresh_seed)
    start = torch.randint(0, len(text.train) - 65, (8,), generator=g)
    x = torch.stack([text.train[s:s + 64] for s in start])
    y = torch.stack([text.train[s + 1:s + 65] for s in start])
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (8, 64, 65)
    assert abs(float(sequence_loss(logits, y)) - torch.log(torch.tensor(65.0)).item()) < 0.1
    changed = x.clone()
    changed[:, 40] = (changed[:, 40] + 1) % 65  # a later character cannot reach earlier ones
    with torch.no_grad():
        again = model(changed)
    assert torch.allclose(again[:, :40], logits[:, :40], atol=1e-5)
    assert not torch.allclose(again[:, 40:], logits[:, 40:], atol=1e-3)
    targets = select_targets(model)
    assert len(targets) == 25  # 4 blocks x (q, k, v, proj, fc, out) + the head
    sequence_loss(model(x), y).backward()
    params = dict(model.named_parameters())
    assert all(params[t.name].grad.abs().sum() > 0 for t in targets)
    with pytest.raises(ValueError, match="longer than the context 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
