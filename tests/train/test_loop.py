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
