import torch

from covidct.train.loop import seed_everything, train_step


def test_seeding_makes_draws_repeat():
    a = seed_everything(3)
    first = (torch.rand(4), torch.rand(4, generator=a))
    b = seed_everything(3)
    assert torch.equal(first[0], torch.rand(4)) and torch.equal(first[1], torch.rand(4, generator=b))


def test_train_step_lowers_the_loss():
    seed_everything(0)
    model = torch.nn.Linear(3, 1)
    x = torch.rand(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss = lambda out: torch.nn.functional.mse_loss(out, y)  # noqa: E731
    losses = [train_step(model, x, loss, optimizer, scheduler, bf16=False) for _ in range(50)]
    assert losses[-1] < 0.2 * losses[0]


def test_parameter_groups_give_the_named_module_its_factor_and_the_rest_lr():
    import pytest

    from covidct.train.loop import parameter_groups

    model = torch.nn.Sequential()
    model.add_module("slow", torch.nn.Linear(2, 2))
    model.add_module("head", torch.nn.Linear(2, 1))
    groups = parameter_groups(model, 0.01, {"slow": 0.1})
    assert [g["lr"] for g in groups] == pytest.approx([0.001, 0.01])
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert len(parameter_groups(model, 0.01, {})) == 1  # no factor: one group, as before
    with pytest.raises(ValueError, match="no module"):
        parameter_groups(model, 0.01, {"layer3": 0.1})


def test_fit_moves_a_slowed_module_less():
    from covidct.train.loop import fit

    def run(factors):
        seed_everything(0)
        model = torch.nn.Sequential()
        model.add_module("slow", torch.nn.Linear(3, 3))
        model.add_module("head", torch.nn.Linear(3, 1))
        start = model.slow.weight.detach().clone()
        x = torch.rand(16, 3)
        y = x.sum(1, keepdim=True)
        batch = lambda idx: (x[idx], lambda out: torch.nn.functional.mse_loss(out, y[idx]))  # noqa: E731
        fit(model, torch.arange(16), batch, torch.Generator().manual_seed(0), epochs=3, batch_size=4, lr=0.05,
            bf16=False, lr_factors=factors)
        return float((model.slow.weight.detach() - start).abs().sum())

    assert run({"slow": 0.01}) < 0.1 * run(None)
