"""Order-agnostic ARDM (Hoogeboom et al., *Autoregressive Diffusion Models*, ICLR 2022, Section 3).

An OA-ARDM generates the D variables of x one step at a time in a uniformly random order sigma. At
step t the network sees the t known variables (the others replaced by an absorbing class, plus the
mask) and predicts a categorical distribution for every unknown variable. The objective is

    L = D/(D - t) * sum_{i unknown} -log p(x_i | x_known),   t ~ U{0..D-1}, sigma ~ U(S_D)

(paper Eq. 4 / Algorithm 1), whose expectation bounds -log p(x) averaged over orders. It is the
one-stage case of :class:`ardm.models.base.ARDM`: level 1 is unknown, level 0 known, and the coded
symbol of a variable is its value.

Example:
    >>> import torch
    >>> from ardm.nets import build_net
    >>> model = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
    >>> loss, stats = model.training_loss(torch.randint(0, 4, (2, 1, 4, 4)))
    >>> loss.ndim, sorted(stats)
    (0, ['bpd', 'ce_bpd'])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ardm.models.base import ARDM, sample_categorical
from ardm.models.digit_masses import interval_digit_log_probs
from ardm.models.timesteps import TimestepSampler
from ardm.models.transitions import num_stages

__all__ = ["DIGIT_BASE", "SPLIT_ABOVE", "OrderAgnosticARDM"]

#: A model over more than SPLIT_ABOVE values whose head gives interval masses (a logistic
#: mixture) codes and samples each value as base-DIGIT_BASE digits, most significant first:
#: tables of 16 entries instead of K (part of the coding format).
SPLIT_ABOVE = 256
DIGIT_BASE = 16


class OrderAgnosticARDM(ARDM):
    """Order-agnostic ARDM around a network ``net(x_in, known, t) -> head parameters``.

    Args:
        net: the network (:mod:`ardm.nets`). ``x_in`` is int64 with unknown variables set to
            ``absorbing_state``, ``known`` the bool mask, ``t`` (B,) the number of known ones.
        num_classes: K, the number of values of each variable (values are ``0..K-1``).
        data_shape: shape of one data point, e.g. (1, 28, 28).
        absorbing_state: input value of unknown variables; default K (an extra class).
        ce_weight: weight of the auxiliary plain cross-entropy term (paper: 1e-3 for images).
        timestep_sampler: how training draws t; default stratified over the batch.

    ``step_losses`` (float64[D]) holds L_t in bits: the expected -log2 p of the one variable
    generated at step t.
    """

    kind = "oa"

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        data_shape: tuple[int, ...],
        absorbing_state: int | None = None,
        ce_weight: float = 1e-3,
        timestep_sampler: TimestepSampler | None = None,
    ) -> None:
        num_vars = 1
        for s in data_shape:
            num_vars *= int(s)
        super().__init__(
            net, num_classes, data_shape, num_stages=1, ce_weight=ce_weight,
            timestep_sampler=timestep_sampler, step_losses_shape=(max(num_vars, 1),),
        )
        if getattr(net.head, "num_classes", self.num_classes) != self.num_classes:
            raise ValueError(
                f"the net's head predicts {net.head.num_classes} classes, the model has K = "
                f"{self.num_classes}"
            )
        self.absorbing_state = self.num_classes if absorbing_state is None else int(absorbing_state)
        self.symbols_per_step = self.num_classes
        if self.num_classes > SPLIT_ABOVE and getattr(net.head, "name", None) == "logistic_mixture":
            self.digit_base = DIGIT_BASE
            self.digits_per_symbol = num_stages(self.num_classes, DIGIT_BASE)

    def kind_config(self) -> dict[str, Any]:
        return {"absorbing_state": self.absorbing_state}

    @classmethod
    def from_kind_config(cls, net: nn.Module, num_classes: int, data_shape: tuple[int, ...],
                         ce_weight: float, config: dict[str, Any]) -> OrderAgnosticARDM:
        absorbing = config.get("absorbing_state")
        return cls(net, num_classes, data_shape, absorbing_state=absorbing, ce_weight=ce_weight)

    # ---- the one place where inputs are masked ------------------------------------------------

    def _params(self, x_flat: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Head parameters (B, D, P): unknown variables (level 1) never reach the network, they
        are replaced by the absorbing state."""
        batch = x_flat.shape[0]
        known = levels == 0
        x_in = torch.where(known, x_flat, torch.full_like(x_flat, self.absorbing_state))
        shape = (batch, *self.data_shape)
        params = self._run_net(self.net, x_in.view(shape), known.view(shape), known.sum(1))
        return params.reshape(batch, self.num_vars, -1)

    def _symbol_log_probs(
        self, x_flat: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor, per_row: bool
    ) -> torch.Tensor:
        return self.net.head.log_probs(self._gathered_params(x_flat, levels, positions))

    def _target_log_probs(self, x_flat: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return self.net.head.target_log_probs(self._params(x_flat, levels), x_flat)

    # ---- values as digits (K > SPLIT_ABOVE with a mixture head) --------------------------------

    def _gathered_params(
        self, x_flat: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        params = self._params(x_flat, levels)
        return params.gather(1, positions.unsqueeze(-1).expand(-1, -1, params.shape[-1]))

    def _digit_log_probs(self, params: torch.Tensor, prefix: torch.Tensor, digit: int,
                         per_row: bool) -> torch.Tensor:
        level = self.digits_per_symbol - digit  # the digits still unknown, this one included
        return interval_digit_log_probs(self.net.head, params, prefix.long(), level,
                                        self.digit_base, self.num_classes, per_row)

    def coding_params(
        self, state: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        if self.digits_per_symbol == 1:
            return self.coding_log_probs(state, levels, positions)
        return self._gathered_params(state.long(), levels, positions).float()

    def coding_digit_log_probs(
        self, params: torch.Tensor, prefix: torch.Tensor, digit: int
    ) -> torch.Tensor:
        if self.digits_per_symbol == 1:
            return super().coding_digit_log_probs(params, prefix, digit)
        return self._digit_log_probs(params, prefix, digit, per_row=True).float().clamp(min=-1.0e4)

    def _draw_symbols(
        self,
        state: torch.Tensor,
        levels: torch.Tensor,
        positions: torch.Tensor,
        temperature: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if self.digits_per_symbol == 1:
            return super()._draw_symbols(state, levels, positions, temperature, generator)
        # Digit by digit from one network call: exact at temperature 1 (the digits' product is
        # the value's probability); another temperature applies to each digit's table.
        params = self._gathered_params(state, levels, positions)
        symbols = torch.zeros(positions.shape, dtype=torch.long, device=self.device)
        for digit in range(self.digits_per_symbol):
            lp = self._digit_log_probs(params, symbols, digit, per_row=False)
            drawn = sample_categorical(lp, temperature, generator).to(self.device)
            symbols = symbols + drawn * self.digit_base ** (self.digits_per_symbol - 1 - digit)
        return symbols

    def next_symbols(self, values: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
        return values

    def apply_symbols(
        self, state: torch.Tensor, level: int, positions: torch.Tensor, symbols: torch.Tensor
    ) -> torch.Tensor:
        return state.scatter(1, positions, symbols)

    # ---- the public view ----------------------------------------------------------------------

    @torch.no_grad()
    def predict_log_probs(
        self, x: torch.Tensor, known: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-probabilities (B, *data_shape, K) of every variable given the known ones; with
        ``positions`` (B, n) of flat variable indices only those, (B, n, K).

        Values of ``x`` where ``known`` is False never reach the network.

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> x = torch.zeros(1, 1, 4, 4, dtype=torch.long)
            >>> m.predict_log_probs(x, torch.zeros_like(x, dtype=torch.bool)).shape
            torch.Size([1, 1, 4, 4, 4])
        """
        x = self._check_x(x)
        if not isinstance(known, torch.Tensor) or known.dtype != torch.bool:
            raise ValueError("known must be a bool tensor")
        if known.shape != x.shape:
            raise ValueError(f"known has shape {tuple(known.shape)}, x has {tuple(x.shape)}")
        batch = x.shape[0]
        levels = (~known.to(self.device)).long().flatten(1)
        if positions is None:
            every = self._arange(batch)
            lp = self._symbol_log_probs(x.flatten(1), levels, every, per_row=False)
            return lp.view(*x.shape, -1)
        if positions.ndim != 2 or positions.shape[0] != batch:
            raise ValueError(f"positions must have shape (B, n), got {tuple(positions.shape)}")
        positions = positions.to(self.device, torch.long)
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.num_vars):
            raise ValueError(f"positions must be in 0..{self.num_vars - 1}")
        return self._symbol_log_probs(x.flatten(1), levels, positions, per_row=False)
