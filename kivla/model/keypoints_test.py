"""Spatial-softmax keypoints: coordinates of the scored token, no image -> centre, insulation kept."""

import dataclasses

import numpy as np
import pytest
import torch

from kivla.model.conftest import robot_example, vqa_example
from kivla.model.keypoints import SpatialKeypoints
from kivla.model.policy import KIPolicy
from kivla.model.presets import recipe_config


def with_keypoints(config, k: int = 3, layer: int = -1, input: str = "token", naming: bool = False,
                   peak: int = -1):  # fmt: skip
    expert = dataclasses.replace(config.expert, keypoints=k, keypoint_layer=layer, keypoint_input=input,
                                 keypoint_naming=naming, keypoint_peak=peak)  # fmt: skip
    state_input = "token" if input == "state" else config.state_input  # "state" joins the state's token
    return dataclasses.replace(config, expert=expert, state_input=state_input)


def test_keypoints_start_at_the_centre_and_find_a_scored_token():
    module = SpatialKeypoints(2, value_dim=4, grid=4)
    values = torch.zeros(1, 2, 16 + 3, 2)  # [B, kv, Np = 16 image tokens + 3 text, hd]
    valid = torch.ones(1, 19, dtype=torch.bool)
    assert torch.allclose(module(values, valid), torch.zeros(1, 2, 2))
    values[0, 0, 6, 0] = 1.0  # token 6 = row 1, column 2 of the 4x4 grid
    with torch.no_grad():
        module.score.weight[0, 0] = 50.0
    points = module(values, valid)
    assert torch.allclose(points[0, 0], torch.tensor([0.25, -0.25]), atol=1e-4)  # (x, y) centres in [-1, 1]
    assert torch.allclose(points[0, 1], torch.zeros(2))


def test_examples_without_an_image_get_the_centre():
    module = SpatialKeypoints(2, value_dim=2, grid=2)
    values = torch.randn(2, 1, 4 + 2, 2)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, :4] = False
    with torch.no_grad():
        module.score.weight.normal_()
    points = module(values, valid)
    assert torch.isfinite(points).all() and torch.equal(points[1], torch.zeros(2, 2))


def test_peak_reads_the_mode_of_a_softmax_split_between_two_objects():
    values = torch.zeros(2, 1, 16 + 1, 2)  # [B, kv, Np = 4x4 image tokens + 1 text, hd]
    values[:, 0, 0, 0], values[:, 0, 15, 1] = 1.0, 1.0  # token 0 (top left) and 15 (bottom right)
    valid = torch.ones(2, 17, dtype=torch.bool)
    valid[1, :16] = False  # the second example has no image
    points = {}
    for peak in (-1, 0, 1):
        module = SpatialKeypoints(3, value_dim=2, grid=4, peak=peak)
        with torch.no_grad():
            module.score.weight[:, 0], module.score.weight[:, 1] = 6.0, 5.0  # most weight on token 0
        points[peak] = module(values, valid)
    top_left = torch.tensor([-0.75, -0.75])
    assert (points[-1][0, 0] - top_left).norm() > 0.3  # the plain mean lies between the two tokens
    assert torch.allclose(points[0][0, :2], top_left.expand(2, 2), atol=1e-5)  # keypoints 0 and 1
    assert (points[1][0, 0] - top_left).norm() < 0.1  # its 3x3 neighbourhood: near the mode
    assert torch.allclose(points[0][0, 2], points[-1][0, 2])  # keypoint 2 is not supervised: unchanged
    assert torch.equal(points[0][1], torch.zeros(3, 2))  # no image: the centre, as before


@pytest.mark.parametrize(
    "keypoint_input,naming,peak",
    [
        ("token", False, -1),
        ("norm", False, -1),
        ("state", False, -1),
        ("token", True, -1),
        ("token", True, 1),
    ],
)
def test_insulated_flow_loss_with_keypoints_leaves_the_backbone_untouched(builder, config, keypoint_input,
                                                                          naming, peak):  # fmt: skip
    torch.manual_seed(0)
    policy = KIPolicy(recipe_config("ki", with_keypoints(config, input=keypoint_input, naming=naming,
                                                         peak=peak)))  # fmt: skip
    with torch.no_grad():  # zero-initialized, it would pass no gradient to "norm" keypoints at step 0
        policy.expert.modulation.weight.normal_(std=0.01)
    rng = np.random.default_rng(0)
    batch = builder.collate(
        [robot_example(rng), robot_example(rng, "push the blue square"), vqa_example(rng)]
    )
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    policy.zero_grad(set_to_none=True)
    out.parts["flow"].backward()
    grads = {n: p.grad for n, p in policy.named_parameters()}
    assert all(
        g is None or torch.count_nonzero(g) == 0 for n, g in grads.items() if n.startswith("backbone.")
    )
    assert grads["expert.keypoints.score.weight"].abs().sum() > 0
    if naming:  # the naming term reads the backbone (detached) and trains its gain
        assert grads["expert.keypoints.naming_gain"].abs().sum() > 0
    cached = policy.sample_actions(batch, generator=torch.Generator().manual_seed(1))
    uncached = policy.sample_actions(batch, use_cache=False, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cached, uncached, atol=1e-5)


def test_keypoint_settings_are_checked(config):
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoints"):
        with_keypoints(config, k=-1)
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_input"):
        with_keypoints(config, input="film")
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_input.*state_input"):
        dataclasses.replace(with_keypoints(config, input="state"), state_input="prompt")
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_gain"):
        dataclasses.replace(config.expert, keypoints=2, keypoint_gain=0.0)
    with pytest.raises(ValueError, match=r"ExpertConfig\.attend_image"):
        dataclasses.replace(config.expert, keypoints=0, attend_image=False)
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_peak"):
        dataclasses.replace(config.expert, keypoints=2, keypoint_peak=-2)
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_layer"):
        KIPolicy(recipe_config("ki", with_keypoints(config, layer=config.backbone.depth)))


def test_keypoints_enter_with_their_gain_and_alone_without_image_attention(builder, config):
    """keypoint_gain scales what the expert gets; attend_image=False masks the prefix's image
    tokens out of every expert row (the prompt stays readable)."""
    policy_config = recipe_config("ki", with_keypoints(config, k=2, input="state"))
    torch.manual_seed(0)
    policy = KIPolicy(policy_config)
    batch = builder.collate([robot_example(np.random.default_rng(9))])
    with torch.no_grad():
        policy.expert.keypoints.score.weight.normal_(0, 5.0)  # keypoints away from the centre
    cache = policy.encode_prefix(batch)
    plain = policy.expert.context(cache, 4, torch.float32)
    n = policy.expert.keypoints.grid**2
    assert torch.isfinite(plain.mask[..., :n]).all()  # the expert reads the image by default
    policy.expert.config = dataclasses.replace(policy.expert.config, keypoint_gain=4.0, attend_image=False)
    scaled = policy.expert.context(cache, 4, torch.float32)
    assert plain.keypoint_state.abs().sum() > 0
    assert torch.allclose(scaled.keypoint_state, 4.0 * plain.keypoint_state)
    assert torch.isinf(scaled.mask[..., :n]).all()  # no expert row reads an image token
    prompt = cache.valid[0, n:].nonzero().flatten() + n
    assert torch.isfinite(scaled.mask[..., prompt]).all()


def test_recipe_overrides_set_expert_fields_from_a_dict(config):
    policy_config = recipe_config("ki", config, expert={"keypoints": 4})
    assert policy_config.expert.keypoints == 4 and policy_config.expert.width == config.expert.width


def _square_batch(b: int, generator: torch.Generator):
    """16 px black images with one white 4x4 square in a random cell of the 4x4 token grid; the
    target chunk holds that cell's centre (x, y) in [-1, 1] at every step."""
    from kivla.model.kibatch import KIBatch

    cells = torch.randint(0, 4, (b, 2), generator=generator)  # (column, row)
    images = torch.zeros(b, 3, 16, 16)
    for i, (col, row) in enumerate(cells.tolist()):
        images[i, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 1.0
    target = (cells.float() + 0.5) / 4 * 2 - 1  # [b, 2]
    ids = torch.arange(3).repeat(b, 1) + 2
    batch = KIBatch(
        images=images, image_mask=torch.ones(b, dtype=torch.bool), prefix_ids=ids,
        prefix_mask=torch.ones(b, 3, dtype=torch.bool), suffix_ids=ids[:, :0], suffix_mask=ids[:, :0].bool(),
        state=torch.zeros(b, 2), actions=target[:, None].expand(b, 4, 2).contiguous(),
        action_is_pad=torch.zeros(b, 4, dtype=torch.bool),
        loss_mask={k: torch.full((b,), k == "flow") for k in ("flow", "fast", "lm")},
    )  # fmt: skip
    return batch, target


@pytest.mark.parametrize("keypoint_input", ["token", "norm", "state"])
def test_keypoints_let_the_expert_act_on_where_an_object_is(keypoint_input):
    """The guard of the reading path: with a frozen random backbone, an expert with keypoints learns
    in 150 steps to put its chunk where the square is; rolled images give the error of ignoring them."""
    from kivla.model.presets import SIZES

    torch.manual_seed(0)
    arch = SIZES["test"].policy_config(image_size=16, vocab_size=16, horizon=4, action_dim=2, state_dim=2,
                                       tokens_per_side=4)  # fmt: skip
    expert = {"keypoints": 4, "keypoint_layer": 0, "keypoint_input": keypoint_input}
    policy = KIPolicy(recipe_config("frozen", arch, expert=expert, state_input="token"))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = policy(_square_batch(32, generator)[0], generator=generator).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    val, target = _square_batch(64, torch.Generator().manual_seed(2))
    policy.eval()
    rolled = dataclasses.replace(val, images=val.images.roll(1, 0))

    def error(batch) -> float:
        chunk = policy.sample_actions(batch, generator=torch.Generator().manual_seed(3))
        return float((chunk.mean(1) - target).abs().mean())

    seen, ignored = error(val), error(rolled)
    assert seen < 0.5 * ignored, (seen, ignored)


def test_prompt_conditioned_keypoints_move_with_the_prompt():
    module = SpatialKeypoints(2, value_dim=4, grid=2, conditioned=True, key_dim=4)
    values = torch.randn(2, 1, 4 + 3, 4)  # 4 image tokens, 3 prompt tokens
    valid = torch.ones(2, 7, dtype=torch.bool)
    assert torch.allclose(module(values, valid), torch.zeros(2, 2, 2))  # the prompt term starts at zero
    with torch.no_grad():
        module.prompt_query.weight.normal_()
    base = module(values, valid)
    other = values.clone()
    other[:, :, 4:] = torch.randn(2, 1, 3, 4)  # same image, another prompt
    assert not torch.allclose(module(other, valid), base)
    base.sum().backward()
    assert module.token_key.weight.grad.abs().sum() > 0


def _labelled_robot(rng, first: int, second: int):
    """A robot frame whose label map has class 2 at the centre of the top-left patch and class 4 at
    the bottom-right one (16 px in 2x2 tokens), the instruction naming class `first` then `second`."""
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[3:5, 3:5], labels[11:13, 11:13] = 2, 4
    example = robot_example(rng)
    return dataclasses.replace(example, image_labels=labels, image_refs=((first,), (second,)))


def _supervised(config, naming: bool = False):
    config = recipe_config("ki", with_keypoints(config, k=2, naming=naming), vision_labels=5,
                           keypoint_weight=1.0)  # fmt: skip
    torch.manual_seed(0)
    return KIPolicy(config)


@pytest.mark.parametrize("naming", [False, True])
def test_keypoint_loss_trains_the_keypoint_scores_only(builder, config, naming):
    policy = _supervised(config, naming)
    rng = np.random.default_rng(5)
    batch = builder.collate([_labelled_robot(rng, 2, 4), vqa_example(rng)])
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    assert policy.loss_names[-1] == "keypoint" and out.parts["keypoint"] > 0
    policy.zero_grad(set_to_none=True)
    out.parts["keypoint"].backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert grads["expert.keypoints.score.weight"].abs().sum() > 0
    assert all(n.startswith("expert.keypoints.") for n in grads)  # no backbone, no other expert weight
    unlabelled = policy(builder.collate([robot_example(rng)]), generator=torch.Generator().manual_seed(0))
    assert unlabelled.parts["keypoint"] == 0


def _fit_keypoint_loss(policy, batch, params, steps: int = 60, lr: float = 0.1) -> None:
    """Adam on `params` against the keypoint loss alone."""
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = policy(batch, generator=torch.Generator().manual_seed(0)).parts["keypoint"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_keypoint_loss_puts_each_keypoint_on_its_object(builder, config):
    """Trained on the keypoint loss alone, keypoint 0 goes to the object named first and keypoint 1
    to the second: the target's token is (0, 0) of the 2x2 grid, centre (-0.5, -0.5)."""
    policy = _supervised(config)
    rng = np.random.default_rng(6)
    batch = builder.collate([_labelled_robot(rng, 2, 4) for _ in range(4)])
    _fit_keypoint_loss(policy, batch, policy.expert.keypoints.parameters())
    cache = policy._encode(batch, with_suffix=False).cache
    points = policy.expert.keypoints(cache.values[-1], cache.valid)  # [B, 2, 2]
    assert torch.allclose(points[:, 0], torch.tensor([-0.5, -0.5]), atol=0.1)
    assert torch.allclose(points[:, 1], torch.tensor([0.5, 0.5]), atol=0.1)


def test_goal_keypoint_goes_where_the_target_ends_up(builder, config):
    """With keypoint_goal, keypoint 1 is supervised onto the frame's goal (here the top-right patch,
    where no object is) instead of the second named object; a frame without a goal keeps the
    object; teacher forcing gives the expert the goal."""
    config = recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                           keypoint_teacher_forcing=1.0, keypoint_goal=True)  # fmt: skip
    torch.manual_seed(0)
    policy = KIPolicy(config)
    rng = np.random.default_rng(6)
    goal = np.array([0.75, 0.25], dtype=np.float32)  # (x, y) in [0, 1]: (0.5, -0.5) in [-1, 1]
    examples = [dataclasses.replace(_labelled_robot(rng, 2, 4), image_goal=goal) for _ in range(4)]
    batch = builder.collate([*examples, _labelled_robot(rng, 2, 4)])
    assert batch.loss_mask["goal"].tolist() == [True] * 4 + [False]
    marked, centre = policy._keypoint_targets(batch, torch.arange(5))
    assert marked[:4, 1].nonzero()[:, 1].tolist() == [1] * 4  # token 1: top right of the 2x2 grid
    assert torch.allclose(centre[:4, 1], torch.tensor([0.5, -0.5]))
    assert torch.allclose(centre[4, 1], torch.tensor([0.5, 0.5]), atol=0.05)  # no goal: the object
    use, forced = policy._forced_keypoints(batch, torch.arange(5), torch.Generator().manual_seed(0))
    assert use.all() and torch.equal(forced, centre)
    batch = builder.collate(examples)
    _fit_keypoint_loss(policy, batch, policy.expert.keypoints.parameters())
    cache = policy._encode(batch, with_suffix=False).cache
    points = policy.expert.keypoints(cache.values[-1], cache.valid)  # [B, 2, 2]
    assert torch.allclose(points[:, 0], torch.tensor([-0.5, -0.5]), atol=0.1)  # the target
    assert torch.allclose(points[:, 1], torch.tensor([0.5, -0.5]), atol=0.1)  # the goal


def test_goal_point_is_regressed_onto_the_goal_and_teacher_forced_third(builder, config):
    """With ExpertConfig.goal_point, the expert reads one more point, third: trained by the keypoint
    loss it goes to the annotated goal (a corner here) for one instruction and to the target for
    another; in training the expert is given the true goal there."""
    policy_config = recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                                  keypoint_teacher_forcing=1.0, expert={"goal_point": True})  # fmt: skip
    torch.manual_seed(0)
    policy = KIPolicy(policy_config)
    assert policy.expert.keypoints_in.in_features == 2 * 3  # two keypoints and the goal
    rng = np.random.default_rng(6)
    corner, target = np.array([0.9, 0.1], dtype=np.float32), np.array([0.25, 0.25], dtype=np.float32)

    def example(prompt, goal):
        return dataclasses.replace(_labelled_robot(rng, 2, 4), prompt=prompt, image_goal=goal)

    batch = builder.collate([example("put the red circle in the top right corner", corner),
                             example("reach the red circle", target)] * 2)  # fmt: skip
    use, forced = policy._forced_keypoints(batch, torch.arange(4), torch.Generator().manual_seed(0))
    assert use.shape == (4, 3) and use[:, 2].all()
    assert torch.allclose(forced[0, 2], torch.tensor([0.8, -0.8]))
    assert torch.allclose(forced[1, 2], torch.tensor([-0.5, -0.5]))
    params = [*policy.expert.keypoints.parameters(), *policy.expert.goal.parameters()]
    _fit_keypoint_loss(policy, batch, params, steps=150, lr=0.03)
    points = policy.expert.points(policy.encode_prefix(batch))  # [B, 3, 2]
    assert torch.allclose(points[0, 2], torch.tensor([0.8, -0.8]), atol=0.1)  # the corner
    assert torch.allclose(points[1, 2], torch.tensor([-0.5, -0.5]), atol=0.1)  # the target


def test_goal_point_needs_keypoints_and_their_loss(config):
    with pytest.raises(ValueError, match=r"ExpertConfig\.goal_point"):
        dataclasses.replace(config.expert, keypoints=1, goal_point=True)
    with pytest.raises(ValueError, match=r"ExpertConfig\.goal_point"):
        recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, expert={"goal_point": True})
    with pytest.raises(ValueError, match=r"ExpertConfig\.goal_layer"):
        KIPolicy(recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                               expert={"goal_point": True, "goal_layer": config.backbone.depth}))  # fmt: skip


def test_goal_keypoint_needs_the_keypoint_loss(config):
    with pytest.raises(ValueError, match="keypoint_goal"):
        recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_goal=True)


def test_keypoint_weight_needs_two_keypoints(config):
    with pytest.raises(ValueError, match="keypoint_weight"):
        recipe_config("ki", config, vision_labels=5, keypoint_weight=1.0)


def test_offsets_move_a_keypoint_within_its_patch():
    module = SpatialKeypoints(1, value_dim=4, grid=4, offsets=True)
    values = torch.zeros(1, 2, 16 + 3, 2)
    valid = torch.ones(1, 19, dtype=torch.bool)
    values[0, 0, 6, 0] = 1.0  # token 6: centre (0.25, -0.25)
    with torch.no_grad():
        module.score.weight[0, 0] = 50.0
        module.offset.weight[:, 0] = torch.tensor([100.0, -100.0])  # token 6 only: tanh -> (1, -1)
    point = module(values, valid)[0, 0]
    # half a patch (1 / grid) towards +x and -y, no further
    assert torch.allclose(point, torch.tensor([0.25 + 0.25, -0.25 - 0.25]), atol=1e-3)


def test_teacher_forcing_gives_the_expert_the_true_centres_in_training_only(builder, config):
    """With forcing 1, the flow loss does not depend on keypoints 0 / 1's scores (the expert gets
    the named objects' centres) and stays insulated; sampling uses the predicted keypoints."""
    config = recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                           keypoint_teacher_forcing=1.0)  # fmt: skip
    torch.manual_seed(0)
    policy = KIPolicy(config)
    rng = np.random.default_rng(7)
    batch = builder.collate([_labelled_robot(rng, 2, 4) for _ in range(2)])

    def flow_and_sample():
        flow_loss = policy(batch, generator=torch.Generator().manual_seed(0)).parts["flow"]
        with torch.no_grad():
            chunk = policy.sample_actions(batch, num_steps=2, generator=torch.Generator().manual_seed(0))
        return flow_loss, chunk

    flow_a, chunk_a = flow_and_sample()
    policy.zero_grad(set_to_none=True)
    flow_a.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.backbone.parameters())
    with torch.no_grad():
        policy.expert.keypoints.score.weight.normal_(0, 5.0)  # move the predicted keypoints
    flow_b, chunk_b = flow_and_sample()
    assert torch.allclose(flow_a, flow_b)  # training saw the true centres
    assert not torch.allclose(chunk_a, chunk_b)  # run time acts on the predicted keypoints


def test_teacher_forcing_needs_the_keypoint_loss(config):
    with pytest.raises(ValueError, match="keypoint_teacher_forcing"):
        recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_teacher_forcing=0.5)
    with pytest.raises(ValueError, match="keypoint_teacher_forcing"):
        recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                      keypoint_teacher_forcing=1.5)  # fmt: skip


def test_teacher_forcing_without_labels_trains_on_the_predicted_keypoints(builder, config):
    config = recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                           keypoint_teacher_forcing=1.0)  # fmt: skip
    policy = KIPolicy(config)
    batch = builder.collate([robot_example(np.random.default_rng(8))])  # no labels
    out = policy(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.parts["flow"]) and out.parts["keypoint"] == 0


def test_attention_pooled_prompt_starts_as_the_mean_and_gives_each_keypoint_its_phrase():
    torch.manual_seed(0)
    mean = SpatialKeypoints(2, value_dim=4, grid=2, conditioned=True, key_dim=4)
    pooled = SpatialKeypoints(2, value_dim=4, grid=2, conditioned=True, key_dim=4, prompt_pool="attention")
    with torch.no_grad():
        mean.prompt_query.weight.normal_()
        pooled.load_state_dict(mean.state_dict(), strict=False)
    values = torch.randn(1, 1, 4 + 2, 4)  # 2x2 image tokens, then two prompt tokens
    valid = torch.ones(1, 6, dtype=torch.bool)
    assert torch.allclose(mean.weights(values, valid), pooled.weights(values, valid), atol=1e-6)
    with torch.no_grad():  # keypoint 0 reads only prompt token 0, keypoint 1 only prompt token 1
        values[0, 0, 4:] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
        pooled.prompt_pool.weight.copy_(torch.tensor([[50.0, 0, 0, 0], [0, 50.0, 0, 0]]))
    weights = pooled.weights(values, valid)
    for k in range(2):  # as if the prompt were that one token alone
        alone = torch.cat([values[:, :, :4], values[:, :, 4 + k : 5 + k]], dim=2)
        assert torch.allclose(weights[0, k], mean.weights(alone, valid[:, :5])[0, k], atol=1e-4)
    with pytest.raises(ValueError, match="prompt_pool"):
        SpatialKeypoints(2, value_dim=4, grid=2, conditioned=True, prompt_pool="max")


def test_naming_keypoints_score_each_token_by_how_the_backbone_names_it_with_the_prompt_words():
    """Prompt word 0 is named at image token 1, word 1 at token 2 (log-probabilities): the mean pool
    splits each keypoint between the two tokens, a pool on one word puts its keypoint on that token."""
    module = SpatialKeypoints(2, value_dim=4, grid=2, naming=True, prompt_pool="attention")
    values = torch.zeros(1, 1, 4 + 2, 4)  # 2x2 image tokens, then two prompt tokens
    values[0, 0, 4:] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    naming = torch.full((1, 4, 2), -12.0)  # [B, n, Lp]
    naming[0, 1, 0] = naming[0, 2, 1] = -0.1
    weights = module.weights(values, valid, naming)  # [B, K, n]
    assert torch.allclose(weights[0, :, 1], weights[0, :, 2]) and (weights[0, :, 1] > 0.49).all()
    with torch.no_grad():  # keypoint 0 reads only prompt word 0, keypoint 1 only word 1
        module.prompt_pool.weight.copy_(torch.tensor([[50.0, 0, 0, 0], [0, 50.0, 0, 0]]))
    weights = module.weights(values, valid, naming)
    assert weights[0, 0, 1] > 0.99 and weights[0, 1, 2] > 0.99
    weights.sum().backward()  # a gain per keypoint, trained like the rest of the scores
    assert module.naming_gain.grad is not None
    with pytest.raises(ValueError, match="naming"):
        module.weights(values, valid)


def test_policy_hands_the_expert_the_image_naming_of_its_prompt(builder, config):
    policy = KIPolicy(recipe_config("frozen", with_keypoints(config, naming=True)))
    batch = builder.collate([robot_example(np.random.default_rng(i)) for i in (3, 4)])
    cache = policy.encode_prefix(batch)
    n = policy.backbone.image_grid**2
    assert cache.image_naming.shape == (2, n, batch.prefix_ids.shape[1])
    hidden = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                             image_hidden_layers=(0,)).image_hidden[0]  # fmt: skip
    logp = policy.image_word_logprobs(hidden)  # [B, n, V]
    word = batch.prefix_ids[1, 3]
    assert torch.allclose(cache.image_naming[1, :, 3], logp[1, :, word])
    assert policy.encode_prefix(batch).select(torch.tensor([1])).image_naming.shape[0] == 1
    with pytest.raises(ValueError, match="keypoint_naming"):
        with_keypoints(config, k=0, naming=True)


def test_a_bundle_sets_its_keypoint_reading_at_run_time(builder, config):
    from kivla.model.bundle import PolicyBundle

    bundle = PolicyBundle(KIPolicy(recipe_config("ki", with_keypoints(config))), builder)
    assert bundle.policy.expert.keypoints.peak == -1
    bundle.set_keypoint_peak(1)
    assert bundle.policy.expert.keypoints.peak == 1
    with pytest.raises(ValueError, match="keypoint_peak: expected -1"):
        bundle.set_keypoint_peak(-2)
    with pytest.raises(ValueError, match="keypoint_peak: the policy has no keypoints"):
        PolicyBundle(KIPolicy(recipe_config("ki", config)), builder).set_keypoint_peak(1)


def _off_centre_robot(rng):
    """A robot frame whose class-2 object lies a quarter patch right of and above its token's centre
    (pixels 5-6 x 1-2 of the top-left 8 px patch) and class 4 a quarter patch left of and below
    (pixels 9-10 x 13-14 of the bottom-right one); the instruction names 2 then 4."""
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[1:3, 5:7], labels[13:15, 9:11] = 2, 4
    example = robot_example(rng)
    return dataclasses.replace(example, image_labels=labels, image_refs=((2,), (4,)))


def test_offset_loss_regresses_every_objects_offset_from_the_offset_layer(builder, config):
    """keypoint_offset_weight: each object's own token regresses where in its patch the object's
    centre lies, read from keypoint_offset_layer's values; the keypoints the expert gets read their
    offsets there too, and only the offset head learns from it."""
    expert = {"keypoint_offsets": True, "keypoint_offset_layer": 0}
    policy_config = recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                                  keypoint_offset_weight=1.0, expert=expert)  # fmt: skip
    torch.manual_seed(0)
    policy = KIPolicy(policy_config)
    assert policy.expert.offset_layer == 0
    batch = builder.collate([_off_centre_robot(np.random.default_rng(i)) for i in range(4)])
    rows = torch.arange(4)
    keypoints = policy.expert.keypoints
    cache = policy._encode(batch, with_suffix=False).cache
    zero = keypoints.offsets(cache.values[0])
    # Offsets start at zero: each of the two objects is (0.25, 0.25) patch from its token's centre.
    assert torch.allclose(policy._offset_error(batch, rows, zero), torch.full((4,), 0.125))
    policy.zero_grad(set_to_none=True)
    policy(batch, generator=torch.Generator().manual_seed(0)).parts["keypoint"].backward()
    assert all(p.grad is None for p in policy.backbone.parameters())
    assert keypoints.offset.weight.grad.abs().sum() > 0
    _fit_keypoint_loss(policy, batch, keypoints.offset.parameters(), steps=150, lr=0.03)
    cache = policy._encode(batch, with_suffix=False).cache
    offsets = keypoints.offsets(cache.values[0])  # [B, 4, 2] in [-1, 1]: a patch is 1 wide here
    assert torch.allclose(offsets[:, 0], torch.tensor([0.25, -0.25]), atol=0.05)
    assert torch.allclose(offsets[:, 3], torch.tensor([-0.25, 0.25]), atol=0.05)
    points = policy.expert.points(cache)  # the expert's keypoints read the same offsets
    expected = keypoints(cache.values[-1], cache.valid, None, cache.values[0])
    assert torch.allclose(points, expected)
    assert not torch.allclose(points, keypoints(cache.values[-1], cache.valid))


def test_offset_settings_are_checked(config):
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_offset_layer"):
        dataclasses.replace(config.expert, keypoints=2, keypoint_offset_layer=0)
    with pytest.raises(ValueError, match=r"KIPolicyConfig\.keypoint_offset_weight"):
        recipe_config("ki", with_keypoints(config, k=2), vision_labels=5, keypoint_weight=1.0,
                      keypoint_offset_weight=1.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"ExpertConfig\.keypoint_offset_layer"):
        KIPolicy(recipe_config("ki", with_keypoints(config, k=2),
                               expert={"keypoint_offsets": True,
                                       "keypoint_offset_layer": config.backbone.depth}))  # fmt: skip
