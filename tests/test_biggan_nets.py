"""BigGAN / BigGAN-deep networks: spectral norm, conditioning paths, attention, batch norm."""

import pytest
import torch
import torch.nn.functional as F

from genzoo import nets
from genzoo.errors import UserError
from genzoo.gan.sampling import standing_stats
from genzoo.nets.biggan import SelfAttention, SNConv2d, SNEmbedding, SNLinear, StatBatchNorm

TINY = dict(resolution=16, ch=8, z_dim=12, shared_dim=6, num_classes=5, attn_res=[8])


@pytest.mark.parametrize(
    "make", [lambda: SNConv2d(6, 10, 3), lambda: SNLinear(17, 9), lambda: SNEmbedding(7, 12)]
)
def test_spectral_norm_keeps_the_top_singular_value_at_one(make):
    torch.manual_seed(0)
    layer = make().train()
    with torch.no_grad():
        layer.weight.mul_(5.0)
    for _ in range(200):  # power iteration, one step per training-mode call
        layer.sigma()
    w = layer.normalized_weight().detach()
    top = torch.linalg.svdvals(w.reshape(w.shape[0], -1))[0].item()
    assert top == pytest.approx(1.0, abs=1e-3)
    # eval mode uses the stored vectors and does not change them
    layer.eval()
    u = layer.u.clone()
    layer.sigma()
    torch.testing.assert_close(layer.u, u)


def _capture(modules):
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, args))
        for i, m in enumerate(modules)
    ]
    return seen, hooks


def test_hierarchical_latent_chunks_go_to_the_right_blocks():
    torch.manual_seed(0)
    G = nets.build("biggan", **TINY).eval()
    assert len(G.blocks) == 2 and G.chunk == 4 and G.z_dim == 12
    z, y = torch.randn(3, 12), torch.tensor([0, 4, 2])
    seen, hooks = _capture([G.linear] + [b[0].bn1 for b in G.blocks] + [b[0].bn2 for b in G.blocks])
    G(z, y)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen[0][0], z[:, :4])
    e = G.shared(y)
    for i in range(2):
        expected = torch.cat([e, z[:, 4 * (i + 1) : 4 * (i + 2)]], dim=1)
        torch.testing.assert_close(seen[1 + i][1], expected)  # bn1 of block i
        torch.testing.assert_close(seen[3 + i][1], expected)  # bn2 of block i


def test_biggan_deep_conditions_every_batch_norm_on_the_whole_z_and_the_embedding():
    torch.manual_seed(0)
    G = nets.build("biggan-deep", **{**TINY, "ch": 16}).eval()
    z, y = torch.randn(2, 12), torch.tensor([1, 3])
    bns = [m for m in G.modules() if isinstance(m, StatBatchNorm) and m.cond_dim > 0]
    seen, hooks = _capture(bns + [G.linear])
    out = G(z, y)
    for h in hooks:
        h.remove()
    cond = torch.cat([z, G.shared(y)], dim=1)
    assert len(bns) == 4 * 4  # two blocks per resolution, 4 BNs each
    for i in range(len(bns)):
        torch.testing.assert_close(seen[i][1], cond)
    torch.testing.assert_close(seen[len(bns)][0], cond)
    assert out.shape == (2, 3, 16, 16) and out.abs().max() <= 1


def test_generators_accept_soft_class_vectors_equal_to_the_embedding_mix():
    torch.manual_seed(0)
    G = nets.build("biggan", **TINY).eval()
    z = torch.randn(2, G.z_dim)
    onehot = F.one_hot(torch.tensor([1, 3]), 5).float()
    torch.testing.assert_close(G(z, onehot), G(z, torch.tensor([1, 3])))
    with pytest.raises(UserError, match="--class"):
        G(z, torch.tensor([0, 5]))


def test_self_attention_starts_as_identity_and_matches_a_direct_computation():
    torch.manual_seed(0)
    attn = SelfAttention(16).eval()
    x = torch.randn(2, 16, 4, 6)
    torch.testing.assert_close(attn(x), x)  # γ = 0 at initialisation
    with torch.no_grad():
        attn.gamma.fill_(0.7)
    theta = attn.theta(x).flatten(2)  # [N, 2, 24]
    phi = F.max_pool2d(attn.phi(x), 2).flatten(2)  # [N, 2, 6]
    g = F.max_pool2d(attn.g(x), 2).flatten(2)  # [N, 8, 6]
    beta = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # [N, 24, 6]
    o = attn.o(torch.bmm(g, beta.transpose(1, 2)).view(2, 8, 4, 6))
    torch.testing.assert_close(attn(x), x + 0.7 * o, rtol=1e-5, atol=1e-6)


def test_discriminator_projection_term():
    torch.manual_seed(0)
    for name in ("biggan-d", "biggan-deep-d"):
        D = nets.build(name, resolution=16, ch=8, num_classes=5, attn_res=[8]).eval()
        x = torch.randn(3, 3, 16, 16)
        out0, out2 = D(x, torch.zeros(3, dtype=torch.long)), D(x, torch.full((3,), 2))
        assert out0.shape == (3,)
        # the logit difference between two classes is ⟨embed(2) − embed(0), h⟩ with h the pooled features
        seen, hooks = _capture([D.linear])
        D(x, torch.zeros(3, dtype=torch.long))
        hooks[0].remove()
        h = seen[0][0]
        e = D.embed.normalized_weight()
        torch.testing.assert_close(out2 - out0, h @ (e[2] - e[0]), rtol=1e-4, atol=1e-4)


def test_batch_norm_running_stats_standing_stats_and_truncation_banks():
    torch.manual_seed(0)
    bn = StatBatchNorm(4).train()
    batches = [torch.randn(8, 4, 3, 3) * (i + 1) + i for i in range(3)]
    bn.accumulate_standing(True)
    for b in batches:
        bn(b)
    bn.accumulate_standing(False)
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, means)
    torch.testing.assert_close(bn.running_var, variances)
    bn.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(
        bn(x), (x - means[:, None, None]) / torch.sqrt(variances[:, None, None] + bn.eps)
    )

    bank = StatBatchNorm(4, n_stats=5).eval()  # ψ grid 0, .25, .5, .75, 1
    bank.running_means.copy_(torch.arange(5.0)[:, None].expand(5, 4))
    mean, _ = bank.stats(0.3)  # coef = frac(0.3 / 0.25) = 0.2: s[1]·0.2 + s[2]·0.8 (the port's weighting)
    torch.testing.assert_close(mean, torch.full((4,), 1 * 0.2 + 2 * 0.8))
    torch.testing.assert_close(bank.stats(0.5)[0], torch.full((4,), 2.0))
    with pytest.raises(UserError, match="truncation"):
        bank.stats(1.5)


def test_standing_stats_on_a_generator_are_deterministic_and_change_only_the_statistics():
    torch.manual_seed(0)
    G = nets.build("biggan", **TINY).eval()
    u = G.linear.u.clone()
    before = G.blocks[0][0].bn1.running_var.clone()
    standing_stats(G, num_batches=2, batch_size=4, truncation=0.5)
    after = G.blocks[0][0].bn1.running_var.clone()
    assert not torch.allclose(before, after)
    standing_stats(G, num_batches=2, batch_size=4, truncation=0.5)
    torch.testing.assert_close(G.blocks[0][0].bn1.running_var, after, rtol=0, atol=0)
    torch.testing.assert_close(G.linear.u, u, rtol=0, atol=0)
    assert not G.training and not G.blocks[0][0].bn1.training  # restored


def test_ortho_parameters_skip_the_shared_embedding_and_bad_sizes_are_user_errors():
    G = nets.build("biggan", **TINY)
    ids = {id(p) for p in G.ortho_parameters()}
    assert id(G.shared.weight) not in ids and id(G.linear.weight) in ids
    with pytest.raises(UserError, match="channel_mults"):
        nets.build("biggan", resolution=48, ch=8)
    with pytest.raises(UserError, match="latents"):
        G(torch.randn(2, 5), torch.tensor([0, 1]))


def test_generator_and_discriminator_run_under_bf16_autocast():
    torch.manual_seed(0)
    G = nets.build("biggan", **TINY)
    D = nets.build("biggan-d", resolution=16, ch=8, num_classes=5, attn_res=[8])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = D(G(torch.randn(4, G.z_dim), torch.tensor([0, 1, 2, 3])), torch.tensor([0, 1, 2, 3]))
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all() and G.linear.weight.grad is not None


def test_out_of_range_labels_are_a_user_error_naming_the_range():
    G = nets.build("biggan", **TINY).eval()
    z = torch.randn(2, G.z_dim)
    with pytest.raises(UserError, match=r"--class: expected labels in \[0, 5\), got -1\.\.3"):
        G(z, torch.tensor([-1, 3]))
