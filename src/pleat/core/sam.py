"""Sharpness-aware minimisation (Foret et al. 2021) whose ascent perturbs only chosen parameters.

SAM takes its gradient at W + ρ g_U/‖g_U‖, where g_U is the gradient restricted to a subset U of the parameters
and the ascent moves U alone; the descent step, taken back at W with that gradient, updates every parameter. With
U = every parameter it is the SAM of the literature (the same steps as pytorch-optimizer's `SAM`, tested); with U
the affine parameters of the normalisation layers it is SAM-ON (Müller et al. 2023); with U a weight layer it is
the adversarial counterpart of partial smoothing.

    opt = pleat.SAM(model.parameters(), torch.optim.SGD, rho=0.05, perturbed=[model.fc2.weight], lr=0.1)
    loss_fn(model(x), y).backward(); opt.first_step(zero_grad=True)   # to W + ρ g_U/‖g_U‖
    loss_fn(model(x), y).backward(); opt.second_step(zero_grad=True)  # back to W, the base step with this gradient
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


class SAM(torch.optim.Optimizer):
    """SAM around `base_optimizer` (built on the same parameters with `**kwargs`); `perturbed`: the parameters the
    ascent moves (None: all). Its state is the base optimizer's, so its state_dict is the base's."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        perturbed: Iterable[Tensor] | None = None,
        eps: float = 1e-12,
        **kwargs,
    ):
        if not rho >= 0:
            raise ValueError(f"rho must be >= 0 (got {rho})")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.eps = eps
        every = [p for group in self.param_groups for p in group["params"]]
        if perturbed is None:
            self.perturbed = every
        else:
            ids = {id(p) for p in perturbed}
            self.perturbed = [p for p in every if id(p) in ids]
            if len(self.perturbed) != len(ids):
                raise ValueError("SAM: every perturbed parameter must be one of the optimised parameters")
        self._saved: list[tuple[Tensor, Tensor]] = []

    def load_state_dict(self, state_dict: dict) -> None:
        """Load into the base optimizer (its momentum included), and share its groups and state again."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move the perturbed parameters to W + ρ g/‖g‖, the norm taken over them alone."""
        with_grad = [p for p in self.perturbed if p.grad is not None]
        if with_grad:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in with_grad]))
            scale = self.param_groups[0]["rho"] / (norm + self.eps)
            self._saved = [(p, p.clone()) for p in with_grad]
            torch._foreach_add_(with_grad, torch._foreach_mul([p.grad for p in with_grad], scale))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Put the perturbed parameters back at W exactly, then take the base optimizer's step."""
        for p, old in self._saved:
            p.copy_(old)
        self._saved = []
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """Both steps; `closure` clears the gradients and recomputes loss and gradients (required)."""
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and its gradient")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss
