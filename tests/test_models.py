"""The model zoo's CIFAR nets (ResNet-20: He et al.'s sizes and its parameter-free
shortcut; the VGGs), a real CIFAR-10 batch through each, and char-gpt on real text."""
import pytest
import torch

from bingo.engine.targets import select_targets
from bingo.harness.models import BasicBlock, build_model, resnet, vgg


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


def _vgg11_weights(w: int) -> int:
    """VGG-11's conv weights counted from the paper's configuration A (3x3 kernels, widths
    w, 2w, 4w, 4w, 8w x 4) plus the classifier's 8w x 10."""
    chans = [3, w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w, 8 * w, 8 * w]
    return sum(9 * a * b for a, b in zip(chans[:-1], chans[1:])) + 8 * w * 10


@pytest.mark.parametrize("name, width", [("vgg11", 64), ("vgg11-w16", 16)])
def test_the_cifar_vgg11s_have_the_paper_s_layers(cifar10, name, width):
    model = build_model(name)
    targets = select_targets(model)
    assert [t.name for t in targets] == [f"conv{i}.weight" for i in range(1, 9)] + ["fc.weight"]
    assert sum(t.shape.numel() for t in targets) == _vgg11_weights(width)
    batchnorm = 2 * width * (1 + 2 + 4 + 4 + 8 * 4)
    assert sum(p.numel() for p in model.parameters()) == _vgg11_weights(width) + batchnorm + 10
    assert not any(m.bias is not None for m in model if isinstance(m, torch.nn.Conv2d))
    if name == "vgg11":
        assert sum(p.numel() for p in model.parameters()) == 9228362  # "9.2M"
        return
    model.eval()
    x = cifar10.train.images[:16]
    assert model[:-3](x).shape == (16, 8 * width, 2, 2)  # four 2x2 max-pools: 32 -> 2 pixels
    out = model(x)
    assert out.shape == (16, 10) and torch.isfinite(out).all()
    assert out.std(0).max() > 0  # the images' outputs differ


def test_vgg16_and_the_refused_shapes():
    assert len(select_targets(vgg(16, 4))) == 14  # 13 convs + the classifier
    with pytest.raises(ValueError, match="depth 11 or 16, not 13"):
        vgg(13)
    with pytest.raises(ValueError, match="positive channel count, not 0"):
        vgg(11, 0)


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
