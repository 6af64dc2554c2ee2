"""The partial local entropy losses (eq 14, 19, 22, 23) as a loss object for any model and training loop."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pleat.core import engines, radii
from pleat.core._compat import tree_map
from pleat.core.kernels import Box, Kernel
from pleat.core.select import LayerSpec, describe, select, unwrapped

KINDS = ("pla", "plea")
ENGINES = ("auto", "vectorised", "sequential")
# "auto" prefers the vectorised engine unless its stacked perturbations would take more memory than this.
AUTO_SEQUENTIAL_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Last:
    """What the last call saw; every tensor is detached and stays on the model's device (no host sync).

    Attributes:
        loss: the sampled loss that was returned, 0-d.
        centre_loss: L(W) at the unperturbed weights, 0-d.
        output: the model's output at the unperturbed weights (for training accuracy without another forward).
        losses: per-point losses `[y+1]`, the centre first.
        log_weights: per-point log-kernel `-d(ΔW^a)` `[y+1]` (0 for the centre and for flat kernels).
        curvature: estimate of tr(H_UU), the Hessian trace over the smoothed weights: the mean rise of the loss
            over the perturbed points divided by variance/2 (R²/6 for the hard box); None without perturbations,
            and None under float16/bfloat16 autocast, where a loss rise is resolved only to about 5e-4 and the
            estimate would be noise.
        curvature_se: its standard error: the sample standard deviation of the independent units (the points, or
            with `antithetic` the pair means, since the two points of a pair are not independent) over √units,
            divided by c4(units) so that it is unbiased for small y; None with fewer than 2 units.
    """

    loss: Tensor
    centre_loss: Tensor
    output: object
    losses: Tensor
    log_weights: Tensor
    curvature: Tensor | None
    curvature_se: Tensor | None


def aggregate(kind: str, losses: Tensor, log_weights: Tensor, beta: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """Combine per-point losses `[..., y+1]` (centre first) into the sampled loss `[...]`.

    pla (eq 19; eq 23 for the hard box): (1/(y+1)) [L_0 + Σ_a K_a L_a], K_a = exp(log_weights[a]).
    plea (eq 14; eq 22 for the hard box): -log{(1/(y+1)) [e^{-β L_0} + Σ_a e^{-β L_a - d_a}]}.
    Both are divided by y+1, so sampling does not act as a larger learning rate. `mask` (the trainer's, one row
    per run): the points that count in each row; y+1 is then each row's count.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    log_weights = log_weights.to(losses.dtype)
    if mask is None:
        points = losses.shape[-1]
        if kind == "pla":
            return (losses * log_weights.exp()).sum(-1) / points
        return math.log(points) - torch.logsumexp(-beta * losses + log_weights, dim=-1)
    counts = mask.sum(-1)
    if kind == "pla":
        return torch.where(mask, losses * log_weights.exp(), 0).sum(-1) / counts
    return counts.log() - torch.logsumexp((-beta * losses + log_weights).masked_fill(~mask, -math.inf), dim=-1)


class PartialLocalEntropy:
    """The sampled partial local entropy of a model, restricted to chosen layers.

    `loss = obj(inputs, targets)` evaluates the model's loss at the centre W and at y points W + ΔW^a whose
    perturbations are non-zero only on the selected weights U, and combines them (see `aggregate`).
    `loss.backward()` leaves in `.grad` the exact gradient of that sampled loss. Parameters are never modified;
    only the centre point updates BatchNorm running statistics; dropout masks are independent per point.

    Args:
        model: any module, or a DistributedDataParallel wrapper.
        loss_fn: `loss_fn(output, targets) -> scalar tensor`, e.g. `torch.nn.functional.cross_entropy`; None for
            a model that computes its own loss (a Hugging Face model given `labels=`): the loss is `output.loss`,
            `output["loss"]`, or the output itself when it is a scalar.
        layers: the smoothed subset U: 1-based weight-layer index (Linear/Conv in registration order), module
            name, glob pattern over module names, module type, callable `(name, module) -> bool`, a list of these,
            or "all" (every weight layer: the isotropic case).
        radius: R, half-side of the smoothing hypercube, per weight (required for the box kernels). One number for
            every smoothed weight (the paper), or per layer: a mapping from layer spec to R
            (`{"fc1": 0.005, "fc2": 0.02}`, each smoothed weight under exactly one key), a callable of the
            `Selected` parameter, or `pleat.relative(rho)`: R_l = rho x RMS(W_l), re-read at every call
            (`pleat.relative(rho, per="weight")`: R_i = rho x |w_i|, each weight its own box; per="filter": each
            output unit's RMS). A config's strings "relative:RHO", "relative-filter:RHO" and
            "relative-weight:RHO" mean the same.
        samples: y, extra points besides the centre. `samples=0` (or a zero radius) is exactly the plain loss, the
            R -> 0 end of a curve; `pleat train` refuses it instead, since a stored run named PLA would be plain SGD.
        kind: "pla" (partial local average, eq 19/23) or "plea" (partial local entropy, eq 14/22).
        sharpness: k, steepness of the soft box (eq 5); inf is the hard box of the paper's experiments.
        include_bias: also smooth the biases of the selected layers (the paper never does).
        generator: source of the perturbations; same state, same perturbations. None: an own generator seeded
            from torch's global RNG at construction, offset by the rank under torch.distributed unless
            `same_across_ranks`.
        kernel: a kernel object instead of radius/sharpness, e.g. `pleat.Gaussian(gamma=1e4)` (eq 1).
        beta: β, inverse temperature of "plea" (eq 1); 1 in eq 14/22.
        antithetic: draw points in pairs (ΔW, -ΔW): the first-order term cancels, lowering the variance.
        engine: "vectorised" (one vmap over the points), "sequential" (one point at a time, bounded memory) or
            "auto" (vectorised unless its perturbations exceed 2 GiB or vmap cannot run the model).
        same_across_ranks: under torch.distributed with `generator=None`, draw identical perturbations on every
            rank instead of independent ones.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., Tensor] | None,
        *,
        layers: LayerSpec | Iterable[LayerSpec] | None,
        radius: radii.Radius | str | None = None,
        samples: int = 4,
        kind: str = "pla",
        sharpness: float = math.inf,
        include_bias: bool = False,
        generator: torch.Generator | None = None,
        kernel: Kernel | None = None,
        beta: float = 1.0,
        antithetic: bool = False,
        engine: str = "auto",
        same_across_ranks: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(output, targets) -> scalar tensor, or None")
        if isinstance(radius, str):  # a config's form, "relative:0.2": the same radius as pleat.relative(0.2)
            rule = radii.from_config(radius)
            if isinstance(rule, radii.Scoped):
                raise ValueError(
                    "radius 'scoped:RISE' needs data to measure the curvature on: pass "
                    f"radius=pleat.scope(model, loss_fn, data, layers, rise={rule.rise:g})"
                )
            radius = rule
        if kernel is None:
            if radius is None:
                raise ValueError(
                    "radius is required: the half-side R of the hypercube per weight (the paper uses "
                    "0.01), or pass kernel=pleat.Gaussian(gamma=...)"
                )
            if not radii.per_layer(radius):
                kernel = Box(radius, sharpness)  # type: ignore[arg-type]
        elif radius is not None or not math.isinf(sharpness):
            raise ValueError("give either kernel= or radius=/sharpness=, not both")
        elif not isinstance(kernel, Kernel):
            raise TypeError(
                f"kernel {kernel!r} lacks the Kernel protocol: sample_(out, generator), log_weight(delta), "
                "variance and flat (see pleat.Kernel)"
            )
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples must be an integer >= 0 (the paper uses 4), got {samples!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        if antithetic and samples % 2:
            raise ValueError(f"antithetic points come in pairs: samples must be even, got {samples}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")

        module = unwrapped(model)
        self.model = model
        self.selected = select(module, layers, include_bias)
        self.target = engines.Target(model, module, "module." if module is not model else "", loss_fn, self.selected)
        # one kernel for every smoothed weight, or None: a box per weight from `radius` (see `kernels`)
        self.kernel, self.samples, self.kind, self.beta = kernel, samples, kind, float(beta)
        self.radius, self.sharpness, self.include_bias = radius, sharpness, include_bias
        self._boxes = None if kernel is not None else self._resolve_boxes()  # checks the radii now
        self._in_call = False
        self.antithetic, self.engine = antithetic, engine
        self.generator = generator
        if generator is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
            if torch.distributed.is_available() and torch.distributed.is_initialized() and not same_across_ranks:
                seed += 1_000_003 * torch.distributed.get_rank()
            self._seed = seed
        self._last: Last | None = None
        self._fallback = False  # auto fell back to the sequential engine after vmap failed

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}"
            for k, v, default in (("beta", self.beta, 1.0), ("antithetic", self.antithetic, False))
            if v != default
        )
        layers = ", ".join(s.name for s in self.selected)
        return (
            f"PartialLocalEntropy(kind={self.kind!r}, layers=[{layers}], samples={self.samples}, "
            f"{self._kernel_text()}, engine={self.engine!r}{extra})"
        )

    @property
    def last(self) -> Last:
        """What the latest call computed (see `Last`): the loss, the centre's loss and output, each point's loss."""
        if self._last is None:
            raise RuntimeError("obj.last is read after a call: loss = obj(inputs, targets) first")
        return self._last

    def state_dict(self) -> dict:
        """What a resumed run needs to draw the same perturbations: the generator's state (a CPU tensor)."""
        return {"generator": self._generator(self._device()).get_state(), "fallback": self._fallback}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the next call draws what the saved objective's next call would have."""
        self._generator(self._device()).set_state(state["generator"].cpu())
        self._fallback = bool(state.get("fallback", False))

    def _device(self) -> torch.device:
        return self.target.module.get_parameter(self.selected[0].name).device

    def describe(self) -> str:
        """The resolved subset U: parameter names, shapes and counts, and how points are drawn."""
        if self.samples == 0 or self.variance() == 0:
            why = "samples = 0" if self.samples == 0 else "radius = 0"
            head = f"the plain loss: {why}, no point is perturbed"
        else:
            head = f"{self.kind} over {self.samples} points + centre, {self._kernel_text()}"
        return head + "\n" + describe(self.selected)

    def _resolve_boxes(self) -> dict[str, Kernel]:
        box = functools.partial(Box, sharpness=self.sharpness)
        assert self.radius is not None
        return radii.kernels(self.radius, self.target.module, self.selected, box, self.include_bias)

    def kernels(self) -> dict[str, Kernel]:
        """Each smoothed parameter's kernel: the common one, or its box (relative radii: read from the weights once
        per call, at its start, or now outside a call)."""
        if self.kernel is not None:
            return dict.fromkeys((s.name for s in self.selected), self.kernel)
        if isinstance(self.radius, radii.Relative) and not self._in_call:
            self._boxes = self._resolve_boxes()
        assert self._boxes is not None
        return dict(self._boxes)

    def variance(self) -> float:
        """The per-coordinate variance of the draws, averaged over the smoothed weights (one kernel: its own).
        With per-layer radii the curvature estimate divides by it: it estimates Σ_l (v_l / v) tr(H_ll)."""
        kernels = self.kernels()
        total = sum(s.numel for s in self.selected)
        return sum(kernels[s.name].variance * s.numel for s in self.selected) / total

    def _kernel_text(self) -> str:
        if self.kernel is not None:
            return f"kernel={self.kernel!r}"
        if isinstance(self.radius, radii.Relative):
            per = f", per={self.radius.per!r}" if self.radius.per != "layer" else ""
            return f"radius=relative({self.radius.rho:g}{per}), sharpness={self.sharpness}"
        boxes = radii.resolve(self.radius, self.target.module, self.selected, self.include_bias)  # type: ignore[arg-type]
        return "radius={" + ", ".join(f"{n}: {r:g}" for n, r in boxes.items()) + "}"

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None:
            self.generator = torch.Generator(device).manual_seed(self._seed)
        elif self.generator.device.type != device.type:
            raise ValueError(
                f"generator is on {self.generator.device} but the model is on {device}; "
                f"pass torch.Generator(device={str(device)!r})"
            )
        return self.generator

    def _weigh(self, delta: dict[str, Tensor]) -> Tensor:
        kernels = self.kernels()
        return torch.stack([kernels[n].log_weight(d) for n, d in delta.items()]).sum()

    def _choose_engine(self, params: dict[str, Tensor]) -> str:
        if self.engine != "auto":
            return self.engine
        if self._fallback:  # vmap could not run this model before
            return "sequential"
        size = sum(s.numel * params[s.name].element_size() for s in self.selected) * (self.samples + 1)
        return "sequential" if size > AUTO_SEQUENTIAL_BYTES else "vectorised"

    def __call__(self, inputs: Tensor | tuple | None = None, targets=None, **kwargs) -> Tensor:
        """The sampled loss; see the class docstring.

        `obj(x, t)` calls `model(x)` and `loss_fn(output, t)`; a tuple of inputs is unpacked, `model(*inputs)`.
        Keyword arguments go to the model: `obj(**batch)` calls `model(**batch)`, as Hugging Face models are called,
        and with `loss_fn=None` the loss is the one the model computes (give it `labels`).
        """
        args = () if inputs is None else inputs if isinstance(inputs, tuple) else (inputs,)
        if kwargs and targets is None and self.target.loss_fn is not None:
            raise ValueError(
                "keyword inputs and a loss_fn, but no targets: call obj(targets=t, **inputs), or give loss_fn=None "
                "to use the loss the model computes from its labels"
            )
        params = dict(self.target.module.named_parameters())
        device = self._device()
        for a in (*args, *kwargs.values()):
            if isinstance(a, Tensor) and a.device != device:
                raise ValueError(
                    f"inputs are on {a.device} but the model is on {device}; move them with .to({str(device)!r})"
                )
        g = self._generator(device)
        if isinstance(self.radius, radii.Relative):  # one read of the weights' scale per call (a host sync each)
            self._boxes = self._resolve_boxes()
        buffers = [b for bn in engines.BatchNormCentre(self.target.module).bns for b in bn.buffers()]
        saved = [b.clone() for b in buffers]
        reduced = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) in (
            torch.float16,
            torch.bfloat16,
        )
        self._in_call = True
        try:
            loss, losses, log_weights, out = self._evaluate(params, g, args, kwargs, targets)
            self._last = self._summarise(loss, losses, log_weights, out, reduced)
        except BaseException:
            with torch.no_grad():  # a failed call leaves no trace, not even in BatchNorm statistics
                for b, value in zip(buffers, saved, strict=True):
                    b.copy_(value)
            raise
        finally:
            self._in_call = False
        return loss

    def _evaluate(self, params, g, args, kwargs, targets):
        if self.samples == 0 or self.variance() == 0:  # no perturbation: exactly the plain loss
            out = self.model(*args, **kwargs)
            loss = engines.scalar_loss(self.target.loss_fn, out, targets)
            return loss, loss.unsqueeze(0), torch.zeros(1, dtype=loss.dtype, device=loss.device), out
        names = [s.name for s in self.selected]
        fills = {n: k.sample_ for n, k in self.kernels().items()}
        draws = engines.Draws(fills, params, names, self.samples, g, self.antithetic)
        engine = self._choose_engine(params)
        if engine == "vectorised":
            try:
                losses, out = engines.vectorised(self.target, draws, args, kwargs, targets)
            except RuntimeError as e:
                if self.engine != "auto" or not _is_vmap_error(e):
                    raise
                warnings.warn(
                    f"pleat: vmap cannot run this model ({str(e).splitlines()[0]}); falling back to "
                    "the sequential engine (pass engine='sequential' to silence)",
                    stacklevel=3,
                )
                self._fallback = True  # `engine` stays what the user asked for
                draws.restart()
                engine = "sequential"
        if engine == "sequential":
            losses, out = engines.sequential(self.target, draws, args, kwargs, targets)
        log_weights = torch.zeros_like(losses)  # log-kernel per point: 0 for the centre and for flat kernels
        if not all(k.flat for k in self.kernels().values()):
            log_weights[1:] = torch.stack([self._weigh(draws.point(a)) for a in range(1, self.samples + 1)])
        return aggregate(self.kind, losses, log_weights, self.beta), losses, log_weights, out

    def _summarise(self, loss: Tensor, losses: Tensor, log_weights: Tensor, out, reduced: bool) -> Last:
        losses = losses.detach()
        curvature = curvature_se = None
        variance = self.variance()
        if losses.shape[0] > 1 and variance > 0 and not reduced:
            rise = losses[1:] - losses[0]
            scale = variance / 2  # E[ΔWᵀ H ΔW]/2 = (variance/2) tr(H_UU)
            curvature = rise.mean() / scale
            units = rise.view(-1, 2).mean(1) if self.antithetic else rise  # a pair's two points are not independent
            n = units.shape[0]
            if n > 1:
                curvature_se = units.std() / math.sqrt(n) / _c4(n) / scale
        output = tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, out)
        return Last(loss.detach(), losses[0], output, losses, log_weights.detach(), curvature, curvature_se)


def _c4(n: int) -> float:
    """E[s]/σ for n normal draws: dividing the sample standard deviation by it makes it unbiased."""
    return math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def _is_vmap_error(e: RuntimeError) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("vmap", "batching rule", "functorch", "batched tensor"))
