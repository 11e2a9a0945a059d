import torch

from kivla.model import masks


def test_backbone_mask_prefix_bidirectional_suffix_causal():
    prefix_valid = torch.tensor([[True, True, True, False]])
    suffix_valid = torch.tensor([[True, True, False]])
    m = masks.backbone_attention_mask(prefix_valid, suffix_valid)[0]  # [7, 7]
    # Valid prefix tokens see each other in both directions, never padding, never the suffix.
    assert m[0, 2] and m[2, 0]
    assert not m[0, 3] and not m[0, 4:].any()
    # Suffix tokens see the valid prefix, themselves and earlier suffix tokens only.
    assert m[4, :3].all() and not m[4, 3]
    assert m[4, 4] and not m[4, 5]
    assert m[5, 4] and m[5, 5] and not m[5, 6]
    # Padded rows are never empty (no NaN): at least the diagonal.
    assert m.any(dim=1).all()


def test_expert_mask_sees_valid_prefix_and_all_expert_tokens():
    prefix_valid = torch.tensor([[True, False, True]])
    m = masks.expert_attention_mask(prefix_valid, num_expert=2)[0]
    assert m.shape == (2, 5)
    assert m[:, 0].all() and not m[:, 1].any() and m[:, 2:].all()


def test_positions_skip_padding():
    prefix_valid = torch.tensor([[True, False, True, True], [True, True, False, False]])
    assert masks.prefix_positions(prefix_valid).tolist() == [[0, 0, 1, 2], [0, 1, 1, 1]]
    suffix_valid = torch.tensor([[True, True], [True, False]])
    assert masks.following_positions(prefix_valid, suffix_valid).tolist() == [[3, 4], [2, 2]]
