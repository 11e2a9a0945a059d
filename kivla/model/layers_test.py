import torch

from kivla.model.layers import RMSNorm, ada_rms_norm, additive_mask, apply_rope, attend, rope_tables


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(pq, pk):
        rq = apply_rope(q, rope_tables(torch.tensor([[pq]]), 8, 10_000.0, q.dtype))
        rk = apply_rope(k, rope_tables(torch.tensor([[pk]]), 8, 10_000.0, k.dtype))
        return (rq * rk).sum().item()

    assert abs(score(3, 1) - score(10, 8)) < 1e-4
    assert abs(score(3, 1) - score(3, 2)) > 1e-4


def test_ada_rmsnorm_identity_modulation_is_rmsnorm_with_unit_gate():
    x = torch.randn(2, 3, 6)
    identity = torch.cat([torch.ones(2, 6), torch.zeros(2, 6), torch.ones(2, 6)], dim=1)
    normed, gate = ada_rms_norm(x, identity)
    torch.testing.assert_close(normed, RMSNorm(6)(x))
    assert torch.equal(gate, torch.ones_like(gate))
    scale_shift_gate = torch.cat([torch.full((2, 6), 2.0), torch.full((2, 6), 0.5), torch.zeros(2, 6)], dim=1)
    normed, _ = ada_rms_norm(x, scale_shift_gate)
    torch.testing.assert_close(normed, 2.0 * RMSNorm(6)(x) + 0.5)


def test_grouped_query_attention_equals_repeated_kv():
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    mask = torch.rand(2, 5, 7) > 0.3
    mask[..., 0] = True
    out = attend(q, k, v, additive_mask(mask, q.dtype))
    full = attend(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), additive_mask(mask, q.dtype)
    )
    torch.testing.assert_close(out, full)
    # Masked keys have no influence at all.
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 3], v2[0, :, 3] = 100.0, -100.0
    only = torch.ones(2, 5, 7, dtype=torch.bool)
    only[0, :, 3] = False
    a = attend(q, k, v, additive_mask(only, q.dtype))[0]
    b = attend(q, k2, v2, additive_mask(only, q.dtype))[0]
    torch.testing.assert_close(a, b, atol=0, rtol=0)
