import torch

from kivla.model import flow


def test_sample_time_range_and_weighting_toward_noise():
    t = flow.sample_time(200_000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0.0 and t.max() <= 0.999 + 1e-6
    # s ~ Beta(1.5, 1): E[s] = 0.6, so E[t] = 1 - (0.999 * 0.6 + 0.001) = 0.4004; more mass near t = 0.
    assert abs(t.mean().item() - 0.4004) < 0.005
    assert (t < 0.5).float().mean() > 0.6


def test_interpolation_endpoints_and_target():
    noise, actions = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    assert torch.equal(flow.interpolate(noise, actions, torch.zeros(3)), noise)
    assert torch.equal(flow.interpolate(noise, actions, torch.ones(3)), actions)
    t = torch.tensor([0.25, 0.5, 0.75])
    x_t = flow.interpolate(noise, actions, t)
    # Moving along the target velocity for the remaining time lands on the clean chunk.
    remaining = (1 - t).view(-1, 1, 1)
    torch.testing.assert_close(x_t + remaining * flow.target_velocity(noise, actions), actions)


def test_euler_with_the_true_velocity_recovers_the_chunk():
    noise, actions = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    seen_t = []

    def velocity(x, t):
        seen_t.append(t[0].item())
        return actions - noise

    out = flow.integrate(velocity, noise, num_steps=10)
    torch.testing.assert_close(out, actions, atol=1e-5, rtol=0)
    assert seen_t[0] == 0.0 and abs(seen_t[-1] - 0.9) < 1e-6 and len(seen_t) == 10
