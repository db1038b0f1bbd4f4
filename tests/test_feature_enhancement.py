"""CFE: equations against a per-video reference, masking, identity start, gradients, empty text."""

import pytest
import torch

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.feature_enhancement import ContextAwareFeatureEnhancement


def _module(seed=0, **overrides):
    config = CACMIConfig(**{"feature_dim": 8, **overrides})
    torch.manual_seed(seed)
    cfe = ContextAwareFeatureEnhancement(config)
    with torch.no_grad():  # a trained-looking state: nothing zero, so every path matters
        for param in cfe.parameters():
            param.normal_(0, 0.3)
    return cfe


def _reference(cfe, fv, fq):
    """The DESIGN §3 equations for one unpadded video (L, D) with its valid text queries (c, Dt)."""
    fq = cfe.text_proj(fq)
    d = fv.shape[-1]
    s = cfe.video_key(fv) @ cfe.text_key(fq).T / d**0.5  # (L, c)
    s_r, s_c = s.softmax(1), s.softmax(0)
    a = s_r @ fq
    b = s_r @ s_c.T @ fv
    x = cfe.fuse(torch.cat([fv, a, fv * a, fv * b], -1))
    g = ((fq @ cfe.pool_query / d**0.5).softmax(0)[:, None] * fq).sum(0)
    y = torch.cat([x, g.expand_as(x)], -1)
    return fv + cfe.conv(y.T[None])[0].T


def _inputs(lengths, num_text, seed=1, dim=8, text_dim=8, length=None):
    gen = torch.Generator().manual_seed(seed)
    length = length or max(lengths)
    fv = torch.randn(len(lengths), length, dim, generator=gen)
    fq = torch.randn(len(lengths), max(num_text), text_dim, generator=gen)
    vmask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    tmask = torch.arange(max(num_text))[None, :] < torch.tensor(num_text)[:, None]
    # Garbage in padded frames / masked text slots must not matter.
    fv = torch.where(vmask[..., None], fv, torch.full_like(fv, 1e4))
    fq = torch.where(tmask[..., None], fq, torch.full_like(fq, -1e4))
    return fv, vmask, fq, tmask


@pytest.mark.parametrize("text_dim", [8, 6])
def test_matches_reference_and_batched_equals_single(text_dim):
    cfe = _module(memory_dim=text_dim)
    lengths, num_text = [12, 7, 10], [4, 2, 3]
    fv, vmask, fq, tmask = _inputs(lengths, num_text, text_dim=text_dim)
    out = cfe(fv, vmask, fq, tmask)
    assert out.shape == fv.shape
    assert isinstance(cfe.text_proj, torch.nn.Linear) == (text_dim != 8)
    for b, (n, c) in enumerate(zip(lengths, num_text)):
        expected = _reference(cfe, fv[b, :n], fq[b, :c])
        assert torch.allclose(out[b, :n], expected, atol=1e-5), b
        single = cfe(fv[b : b + 1, :n], vmask[b : b + 1, :n], fq[b : b + 1, :c], tmask[b : b + 1, :c])
        assert torch.allclose(out[b, :n], single[0], atol=1e-5)
        assert torch.equal(out[b, n:], fv[b, n:])  # padded frames keep their input


def test_init_special_weights_makes_cfe_the_identity():
    cfe = _module()
    cfe.init_special_weights()
    assert (cfe.conv.weight == 0).all() and (cfe.conv.bias == 0).all() and (cfe.pool_query == 0).all()
    fv, vmask, fq, tmask = _inputs([9, 5], [3, 1])
    assert torch.equal(cfe(fv, vmask, fq, tmask), fv)


def test_gradient_reaches_every_parameter_and_the_video_features():
    cfe = _module(memory_dim=6)
    fv, vmask, fq, tmask = _inputs([10, 6], [3, 2], text_dim=6)
    fv.requires_grad_(True)
    cfe(fv, vmask, fq, tmask)[vmask].pow(2).sum().backward()
    for name, param in cfe.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert fv.grad[vmask].abs().sum() > 0
    assert (fv.grad[~vmask] == 0).all()  # padded frames stay outside the computation


def test_all_masked_text_gives_finite_text_free_output():
    cfe = _module()
    fv, vmask, fq, _ = _inputs([10, 4], [3, 3])
    no_text = torch.zeros(2, 3, dtype=torch.bool)
    out = cfe(fv, vmask, fq, no_text)
    assert torch.isfinite(out).all()
    # With no valid text A = B = g = 0, so the values in the masked slots are irrelevant.
    other = cfe(fv, vmask, torch.randn_like(fq), no_text)
    assert torch.equal(out, other)
    # A single-cluster video: every frame attends fully to that cluster (A = F_q row for all frames).
    one = torch.tensor([[True, False, False], [True, False, False]])
    assert torch.allclose(cfe(fv, vmask, fq, one)[0, :10], _reference(cfe, fv[0, :10], fq[0, :1]), atol=1e-5)


def test_empty_video_stays_finite():
    cfe = _module()
    fv, _, fq, tmask = _inputs([5], [2])
    out = cfe(fv, torch.zeros(1, 5, dtype=torch.bool), fq, tmask)
    assert torch.equal(out, fv)
