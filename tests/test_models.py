"""The zoo: parameter counts, MACs, architecture options, model API, scripting and export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import resnetlab
from resnetlab.analysis import count_macs, model_info, summarize
from resnetlab.export import script_model
from resnetlab.models import BasicBlock, Bottleneck, ResNet, ZeroPadShortcut, build_model, list_models

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
# ../shared/ANCHORS.md: torchvision 0.29, torch.utils.flop_counter, 1x3x224x224.
ANCHOR_GMACS = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089, "resnet101": 7.801,
                "resnet152": 11.514, "resnext50_32x4d": 4.23, "resnext101_32x8d": 16.414,
                "resnext101_64x4d": 15.46, "wide_resnet50_2": 11.398, "wide_resnet101_2": 22.753}
# ../shared/ANCHORS.md: the paper's CIFAR networks (option A).
CIFAR_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
                "resnet110": 1_727_962, "resnet1202": 19_421_274}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_params_equal_torchvision(name):
    with torch.device("meta"):
        ours = build_model(name)
        theirs = getattr(torchvision.models, name)(weights=None)
    assert n_params(ours) == n_params(theirs)
    ours_keys = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_keys = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_keys == theirs_keys


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_macs_match_anchors(name):
    gmacs = model_info(name)["macs"] / 1e9
    assert abs(gmacs - ANCHOR_GMACS[name]) / ANCHOR_GMACS[name] < 0.01


@pytest.mark.parametrize("name,paper", [("resnet50", 3.8), ("resnet101", 7.6), ("resnet152", 11.3)])
def test_v1_stride_in_1x1_matches_paper_table1(name, paper):
    v1 = model_info(name, stride_in_1x1=True)["macs"] / 1e9
    v15 = model_info(name)["macs"] / 1e9
    assert abs(v1 - paper) / paper < 0.02
    assert v1 < v15  # v1.5 runs the 3x3 conv at the higher resolution


def test_v1_puts_stride_on_first_1x1():
    v15 = build_model("resnet50")
    v1 = build_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert n_params(v1) == n_params(v15)


@pytest.mark.parametrize("name,count", CIFAR_PARAMS.items())
def test_cifar_params_match_paper_table(name, count):
    with torch.device("meta"):
        assert n_params(build_model(name)) == count


def test_option_a_adds_no_parameters_and_b_does():
    a = build_model("resnet20")
    plain = build_model("plain20")
    b = build_model("resnet20", shortcut="B")
    assert n_params(a) == n_params(plain) == 269_722
    # Two projections: 16->32 and 32->64, each conv1x1 + BN.
    assert n_params(b) - n_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert isinstance(b.layer2[0].downsample, nn.Sequential)
    assert all(block.downsample is None and not block.residual for block in plain.residual_blocks())


@pytest.mark.parametrize("size,dtype", [(8, torch.float32), (7, torch.float32), (7, torch.bfloat16)])
def test_option_a_equals_akamaster_lambda(size, dtype):
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, size, size).to(dtype)
    planes = 32  # akamaster: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
    assert torch.equal(shortcut(x), expected)


def test_option_a_gradient_keeps_channels_last():
    # A contiguous gradient meeting channels_last ones slows every op it reaches.
    # torch.autograd.grad returns the gradient as computed (.grad of a leaf is restrided to match it).
    x = torch.randn(2, 16, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    (grad,) = torch.autograd.grad(ZeroPadShortcut(16, 32, stride=2)(x).pow(2).sum(), x)
    assert grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous()
    expected = torch.zeros_like(x)
    expected[:, :, ::2, ::2] = 2 * x.detach()[:, :, ::2, ::2]
    assert torch.equal(grad, expected)


def test_plain_block_ignores_the_input_path():
    torch.manual_seed(0)
    block = BasicBlock(8, 8, residual=False).eval()
    residual = BasicBlock(8, 8).eval()
    residual.load_state_dict(block.state_dict())
    x = torch.randn(1, 8, 6, 6)
    branch = block(x)
    expected = torch.relu(residual.bn2(residual.conv2(torch.relu(residual.bn1(residual.conv1(x))))))
    assert torch.allclose(branch, expected)
    assert not torch.allclose(residual(x), branch)


def test_list_models_and_pattern():
    names = list_models()
    assert set(IMAGENET) <= set(names)
    assert {"resnet20", "resnet1202", "plain18", "plain34", "plain20", "plain110"} <= set(names)
    assert list_models("resnext*") == ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"]


def test_model_info_fields():
    info = resnetlab.model_info("resnet56")
    assert info["depth"] == 56 and info["block"] == "BasicBlock" and info["family"] == "cifar"
    assert info["params"] == 853_018 and info["input_size"] == [1, 3, 32, 32]
    assert info["published"]["paper_cifar10_error"] == 6.97
    info = resnetlab.model_info("resnet50")
    assert info["depth"] == 50 and info["published"]["torchvision_top1_v1"] == 76.130


def test_any_cifar_depth_6n_plus_2():
    model = build_model("resnet14")
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [2, 2, 2]
    assert isinstance(build_model("plain8").layer1[0], BasicBlock)


@pytest.mark.parametrize("call,fragment", [
    (lambda: build_model("resnet5O"), "did you mean resnet56, resnet50"),
    (lambda: build_model("resnet21"), "6n+2"),
    (lambda: build_model("resnet18", groups=32), "BasicBlock supports only groups=1"),
    (lambda: build_model("resnet18", width_per_group=128), "BasicBlock supports only"),
    (lambda: build_model("resnet18", stride_in_1x1=True), "Bottleneck blocks only"),
    (lambda: build_model("resnet18", shortcut="C"), "unknown shortcut 'C'"),
    (lambda: build_model("resnet18", stem="huge"), "unknown stem 'huge'"),
    (lambda: build_model("resnet18", norm_layer="layer"), "unknown norm_layer"),
    (lambda: build_model("resnet18", colour=True), "unknown option(s) colour"),
    (lambda: build_model("resnet50", replace_stride_with_dilation=[True]), "needs 3 values"),
    (lambda: build_model("resnet50")(torch.randn(1, 3, 3, 3)), "too small for the imagenet stem"),
    (lambda: build_model("resnet50")(torch.randn(3, 32, 32)), "too small"),
])
def test_bad_options_give_one_line_errors(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_model_api_features_head_and_classifier():
    torch.manual_seed(0)
    model = build_model("resnet50", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 2048, 2, 2)
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, 2048)
    assert torch.allclose(model.forward_head(features), model(x))
    assert [f["num_chs"] for f in model.feature_info] == [256, 512, 1024, 2048]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 2048)


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("resnet20", 32), ("resnet50", 64)])
def test_feature_info_matches_real_shapes(name, size):
    model = build_model(name).eval()
    shapes = {}
    for info in model.feature_info:
        getattr(model, info["module"]).register_forward_hook(
            lambda _m, _i, out, key=info["module"]: shapes.__setitem__(key, out.shape))
    model(torch.randn(1, 3, size, size))
    for info in model.feature_info:
        assert shapes[info["module"]][1] == info["num_chs"]
        assert shapes[info["module"]][-1] == size // info["reduction"]


def test_dilation_keeps_resolution():
    model = build_model("resnet50", replace_stride_with_dilation=[False, True, True]).eval()
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 8
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 8, 8]
    assert model.layer4[1].conv2.dilation == (4, 4)
    basic = build_model("resnet18", replace_stride_with_dilation=[False, False, True]).eval()
    assert basic.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 4


def test_stems_norms_and_zero_init():
    deep = build_model("resnet50", stem="deep")
    assert isinstance(deep.conv1, nn.Sequential) and deep(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    cifar_stem = build_model("resnet18", stem="cifar", num_classes=10)
    assert cifar_stem.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4
    no_norm = build_model("plain20", norm_layer="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_norm.modules())
    assert no_norm.conv1.bias is not None  # without norm, convs get their bias back
    zero = build_model("resnet50", zero_init_residual=True)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in zero.residual_blocks())
    zero_basic = build_model("resnet20", zero_init_residual=True).eval()
    block = zero_basic.layer1[0]
    x = torch.relu(torch.randn(1, 16, 8, 8))
    assert torch.allclose(block(x), x)  # a zero-initialised residual block is the identity


def test_in_chans_and_num_classes():
    model = build_model("resnet50", num_classes=10, in_chans=1)
    assert model.conv1.weight.shape[1] == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    created = resnetlab.create_model("resnet50", num_classes=10, in_chans=1)
    assert n_params(created) == n_params(model)


# ---------------------------------------------------------------- the seeds' networks


class SeedResidual(nn.Module):
    """seed 002's residual block: convs with bias, 1x1 projection with bias and no BN."""

    def __init__(self, in_channel, out_channel, use_conv=False, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channel, out_channel, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(out_channel, out_channel, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(in_channel, out_channel, kernel_size=1, stride=stride) if use_conv else None
        self.bn1 = nn.BatchNorm2d(out_channel)
        self.bn2 = nn.BatchNorm2d(out_channel)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3:
            x = self.conv3(x)
        return F.relu(y + x)


def seed002_network() -> nn.Sequential:
    def resnet_block(in_channel, out_channel, num_residuals, first_block=False):
        blocks = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blocks.append(SeedResidual(in_channel, out_channel, use_conv=True, stride=2))
            else:
                blocks.append(SeedResidual(out_channel, out_channel))
        return nn.Sequential(*blocks)

    net = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64),
                        nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    net.add_module("resnet_block1", resnet_block(64, 64, 2, first_block=True))
    net.add_module("resnet_block2", resnet_block(64, 128, 2))
    net.add_module("resnet_block3", resnet_block(128, 256, 2))
    net.add_module("resnet_block4", resnet_block(256, 512, 2))
    net.add_module("global_avg_pool", nn.AdaptiveAvgPool2d((1, 1)))
    net.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(512, 10)))
    return net


SEED002_OPTIONS = dict(in_chans=1, num_classes=10, conv_bias=True, projection_norm=False)


def seed002_to_resnetlab(state_dict):
    renamed = {}
    for key, value in state_dict.items():
        key = key.replace("0.", "conv1.", 1) if key.startswith("0.") else key
        key = key.replace("1.", "bn1.", 1) if key.startswith("1.") else key
        key = key.replace("resnet_block", "layer").replace("conv3.", "downsample.0.")
        key = key.replace("fc.1.", "fc.")
        renamed[key] = value
    return renamed


def randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_seed002_network_is_reachable_through_options():
    torch.manual_seed(0)
    seed = seed002_network().eval()
    randomize_bn(seed)
    ours = resnetlab.create_model("resnet18", **SEED002_OPTIONS).eval()
    assert n_params(ours) == n_params(seed)
    ours.load_state_dict(seed002_to_resnetlab(seed.state_dict()))
    x = torch.randn(2, 1, 96, 96)
    assert (ours(x) - seed(x)).abs().max() <= 1e-5


def test_seed002_shape_trace_reproduced_by_summary():
    # The trace printed in seed 002 for a 1x1x224x224 input, stage by stage.
    seed_trace = [[1, 64, 112, 112], [1, 64, 112, 112], [1, 64, 112, 112], [1, 64, 56, 56],
                  [1, 64, 56, 56], [1, 128, 28, 28], [1, 256, 14, 14], [1, 512, 7, 7],
                  [1, 512, 1, 1], [1, 10]]
    with torch.device("meta"):
        model = resnetlab.create_model("resnet18", **SEED002_OPTIONS)
        summary = summarize(model, (1, 1, 224, 224), depth=1)
    assert [row.name for row in summary.rows] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                  "layer3", "layer4", "avgpool", "fc"]
    assert [row.output_shape for row in summary.rows] == seed_trace
    assert summary.total_params == n_params(seed002_network())


class Seed003BasicBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class Seed003ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(Seed003BasicBlock(64, 64), Seed003BasicBlock(64, 64))
        self.layer2 = nn.Sequential(Seed003BasicBlock(64, 128, 2), Seed003BasicBlock(128, 128))
        self.layer3 = nn.Sequential(Seed003BasicBlock(128, 256, 2), Seed003BasicBlock(256, 256))
        self.layer4 = nn.Sequential(Seed003BasicBlock(256, 512, 2), Seed003BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # no max-pool in this stem
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_seed003_resnet18_is_reachable_through_options():
    torch.manual_seed(0)
    seed = Seed003ResNet18().eval()
    randomize_bn(seed)
    ours = resnetlab.create_model("resnet18", stem_pool=False).eval()
    state = {k.replace("shortcut.", "downsample."): v for k, v in seed.state_dict().items()}
    ours.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    assert (ours(x) - seed(x)).abs().max() <= 1e-5


def test_seed000_resnext_bottleneck_width():
    # seed 000: width = int(out_channel * (width_per_group / 64.)) * groups
    block = Bottleneck(256, 128, groups=32, base_width=4)
    assert block.conv2.in_channels == int(128 * 4 / 64) * 32 == 256 and block.conv2.groups == 32


# ---------------------------------------------------------------- scripting, export, memory format

ALL_MODELS = list_models()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_script_export_and_channels_last(name):
    torch.manual_seed(0)
    model = build_model(name, zero_init_residual=name == "resnet1202").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        assert torch.isfinite(expected).all()
        # Deep nets at initialisation in eval mode have logits in the thousands: compare
        # relative to their scale.
        tol = 1e-5 * float(expected.abs().max().clamp(min=1.0))
        scripted = script_model(model)  # torch.jit.script, minus a torch bug that made it flaky in this suite
        assert (scripted(x) - expected).abs().max() <= tol
        exported = torch.export.export(model, (x,))
        assert (exported.module()(x) - expected).abs().max() <= tol
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.contiguous(memory_format=torch.channels_last))
        assert (out_cl - expected).abs().max() <= 10 * tol


def test_resnet1202_forward_and_backward_on_cpu():
    torch.manual_seed(0)
    model = build_model("resnet1202").train()
    x = torch.randn(2, 3, 32, 32)
    loss = F.cross_entropy(model(x), torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.conv1.weight.grad is not None and torch.isfinite(model.conv1.weight.grad).all()
    assert model.layer3[-1].conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,options", [("resnet20", {}), ("resnet32", dict(shortcut="B")),
                                          ("resnet18", dict(num_classes=10))])
def test_activation_checkpointing_gives_the_same_gradients_and_running_statistics(name, options):
    """Recomputing in backward runs batch norm twice; its running statistics must still update once."""
    import copy

    torch.manual_seed(0)
    plain = build_model(name, **options).train()
    recomputed = copy.deepcopy(plain)
    recomputed.set_grad_checkpointing()
    size = 32 if plain.stem_kind == "cifar" else 64
    for _ in range(2):
        x, y = torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))
        for model in (plain, recomputed):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
    for (key, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), key
    for (key, a), b in zip(plain.named_buffers(), recomputed.buffers()):
        assert torch.equal(a, b), key
    assert int(recomputed.bn1.num_batches_tracked) == 2
    recomputed.eval()  # evaluation runs the plain path
    with torch.no_grad():
        x = torch.randn(2, 3, size, size)
        assert torch.equal(recomputed(x), plain.eval()(x))


def test_count_macs_on_real_tensors_equals_meta():
    model = build_model("resnet20")
    assert count_macs(model, (1, 3, 32, 32)) == model_info("resnet20")["macs"] == 40_551_040


def test_resnet_class_directly():
    model = ResNet(BasicBlock, [1, 1], widths=(8, 16), stem="cifar", num_classes=4, shortcut="A")
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 4)
    assert [f["reduction"] for f in model.feature_info] == [1, 2]


@pytest.mark.parametrize("name", IMAGENET)
def test_published_top1_equals_torchvision_weight_metadata(name):
    published = model_info(name)["published"]
    for weights in torchvision.models.get_model_weights(name):
        key = f"torchvision_top1_{weights.name.split('_')[-1].lower()}"  # IMAGENET1K_V2 -> ..._v2
        assert published[key] == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
