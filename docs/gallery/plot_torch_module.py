"""
A plain torch module with a daskie strategy
===========================================

:func:`daskie.fit` trains any ``torch.nn.Module`` on a loss with daskie's iteration
strategies (``ParaFlow``, ``ParaFlowS``, ``GradientDescent``, ``APTS``, ``SAPTS``). Here
APTS (additively preconditioned trust region, seed 004: the parameters split into two
subdomains, local trust-region steps, a global correction) fits ``sin(2 pi x)`` with a small
network; ``client="sync"`` runs its tasks in this process, a ``Client`` on a cluster.
"""

import matplotlib.pyplot as plt
import torch

import daskie
from daskie import APTS

torch.manual_seed(0)
x = torch.linspace(0, 1, 128, dtype=torch.float64)[:, None]
y = torch.sin(2 * torch.pi * x)
net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(),
                          torch.nn.Linear(16, 1)).double()

result = daskie.fit(net, torch.nn.functional.mse_loss, (x, y),
                    APTS(subdomains=2, local_steps=5, epochs=100), client="sync")
trained, history = result.model, result.history
print(f"{result.summary['steps']} iterations ({result.summary['stopped_by']}), "
      f"loss {history[0]['loss']:.3f} -> {result.summary['loss']:.2e}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].semilogy([r["grad_calls"] for r in history], [r["loss"] for r in history], ".-")
axes[0].set_xlabel("gradient evaluations")
axes[0].set_ylabel("loss")
axes[0].set_title("APTS")
with torch.no_grad():
    axes[1].plot(x, y, "k", lw=3, alpha=0.3, label="sin(2 pi x)")
    axes[1].plot(x, trained(x), "C0--", label="trained net")
axes[1].legend()
fig.tight_layout()
