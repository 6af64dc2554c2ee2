"""The reference the trainer is tested against: a run of a config trained by the plainest loop that pleat's public
pieces allow, one point at a time where it can: `PartialLocalEntropy` for pla/plea, `functional_call` at the
shifted weights for noise, `pleat.SAM` with its closure (tested against a hand loop in test_sam),
`torch.optim.SGD`, `LayerTemperature`, and an evaluation loop one example at a time. It shares with the trainer
only the run's lifecycle (data and its noisy labels, initial weights, data order, augmentation, the seed of each
generator), not its maths."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pleat.core import radii
from pleat.core.kernels import Gaussian
from pleat.core.objective import PartialLocalEntropy
from pleat.core.select import select
from pleat.probes.temperature import LayerTemperature
from pleat.runs import lifecycle as life
from pleat.runs.config import Config


def naive_train(config: Config) -> tuple[list[dict], dict]:
    """Per-epoch records (as metrics.jsonl holds them, without seconds) and the final weights."""
    device = torch.device("cpu")
    data = life.load_data(config, device)
    autocast = life.autocast_for(config, device)
    model = life.init_model(config, device)
    optimizer = life.optimizer_for(config, model)
    noise = life.noise_generator(config, device)
    probe = LayerTemperature(model, estimator=config.probe_estimator)
    smoothing = config.kind in ("pla", "plea")
    if smoothing:
        objective = PartialLocalEntropy(
            model,
            F.cross_entropy,
            layers=list(config.layers),
            radius=radii.from_config(config.radius),
            samples=config.samples,
            kind=config.kind,
            sharpness=config.sharpness,
            generator=noise,
        )

    def forward(x, y):
        """(loss to descend, loss to report, output to report)"""
        if smoothing:
            loss = objective(x, y)
            return loss, objective.last.centre_loss, objective.last.output
        if config.kind == "noise" and not radii.is_zero(radii.from_config(config.radius)):
            params = dict(model.named_parameters())
            selected = select(model, list(config.layers))
            radius = radii.from_config(config.radius)
            r = radii.resolve(radius, model, selected)
            per_weight = isinstance(radius, radii.Relative) and radius.per == "weight"
            shifted = dict(params)
            for s in selected:
                with torch.no_grad():
                    if per_weight:  # R_i = rho |w_i|: a Gaussian of std rho / sqrt(3), times |w_i|
                        unit = Gaussian(gamma=3 / radius.rho**2).sample_(torch.empty_like(params[s.name]), noise)
                        shift = unit * params[s.name].abs()
                    else:
                        shift = Gaussian(gamma=3 / r[s.name] ** 2).sample_(torch.empty_like(params[s.name]), noise)
                shifted[s.name] = params[s.name] + shift
            out = torch.func.functional_call(model, shifted, (x,))
            loss = F.cross_entropy(out, y)
            return loss, loss, out
        out = model(x)
        loss = F.cross_entropy(out, y)
        return loss, loss, out

    n, history = len(data.x_train), []
    steps = -(-n // config.batch_size)
    ends = life.window_ends(config, steps)
    for epoch in range(config.epochs):
        loss_sum, correct, clean, windows = 0.0, 0, 0, []
        for group in optimizer.param_groups:
            group["lr"] = life.learning_rate(config, epoch)
        for step, index in enumerate(life.epoch_order(config, n, epoch).split(config.batch_size)):
            x, y = life.batch(config, data, index, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss, reported, out = forward(x, y)
            grads = None
            if config.probe_gradient == "centre":
                with autocast():
                    plain = F.cross_entropy(model(x), y)
                grads = torch.autograd.grad(plain, probe.params)
            loss.backward()
            probe.step(grads=grads)
            if config.kind == "sam":

                def closure():
                    with autocast():
                        again = F.cross_entropy(model(x), y)
                    again.backward()
                    return again

                optimizer.step(closure)
            else:
                optimizer.step()
            loss_sum += float(reported.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            if data.y_train_clean is not None:
                clean += int((out.argmax(1) == data.y_train_clean[index]).sum())
            if (at := epoch * steps + step + 1) in ends:
                windows.append({"step": at, "temperature": {k: list(v) for k, v in probe.epoch().items()}})
        test_loss, test_correct, halves = 0.0, 0, [0, 0]
        model.eval()  # BatchNorm by its running statistics
        with torch.no_grad():
            for i, (x, y) in enumerate(zip(data.x_test, data.y_test)):
                with autocast():
                    out = model(x[None])
                test_loss += float(F.cross_entropy(life.loss_precision(out), y[None], reduction="sum"))
                hit = int(out.argmax(1)[0] == y)
                test_correct += hit
                halves[i % 2] += hit
        model.train()
        temperature = {} if config.probe_every else {k: list(v) for k, v in probe.epoch().items()}
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / n,
            "train_accuracy": correct / n,
            "test_loss": test_loss / len(data.x_test),
            "test_accuracy": test_correct / len(data.x_test),
            "test_accuracy_halves": [halves[0] / ((len(data.x_test) + 1) // 2), halves[1] / (len(data.x_test) // 2)],
            **({"train_accuracy_clean": clean / n} if data.y_train_clean is not None else {}),
            "temperature": temperature,
            **({"windows": windows} if config.probe_every else {}),
        }
        history.append(record)
    return history, {k: v.detach().clone() for k, v in model.state_dict().items()}
