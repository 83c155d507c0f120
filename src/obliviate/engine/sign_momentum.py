"""Sign-of-momentum optimiser: what FALCON's reference SophiaG does when its Hessian is never updated.

SophiaG (Liu et al. 2023) steps theta <- theta - lr * sign(m) * min(|m| / (rho * b * h + eps), 1) with
m an EMA of gradients (beta1 = 0.965) and h an EMA of Hessian-diagonal estimates. FALCON's code never
calls the Hessian update, so h stays 0 and the clip is 1 wherever m != 0: the update is
lr * sign(m) (Signum with momentum, Bernstein et al. 2018), plus decoupled weight decay
theta <- theta * (1 - lr * wd). ``train.optimizer: sign_momentum`` uses it with ``train.adam_betas[0]``
(beta fixed at 0.965, SophiaG's default) with ``train.weight_decay``.
"""

from __future__ import annotations

import torch


class SignMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 5e-5, beta: float = 0.965, weight_decay: float = 1e-3):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, beta, wd = group["lr"], group["beta"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                m.mul_(beta).add_(p.grad, alpha=1 - beta)
                p.mul_(1 - lr * wd)
                p.add_(torch.sign(m), alpha=-lr)
        return loss
