"""optnorm's update rules as torch.optim.Optimizer classes (optnorm.torch.optim)."""
import torch

import optnorm.torch as ont

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
X, y = torch.randn(256, 20), torch.randint(0, 4, (256,))

# Muon on the 2-D weights; the biases go to the fallback rule (here AdamW).
matrices = [p for p in model.parameters() if p.ndim == 2]
vectors = [p for p in model.parameters() if p.ndim != 2]
opts = [ont.optim.Muon(matrices, lr=0.02, weight_decay=0.0), ont.optim.AdamW(vectors, lr=1e-2)]
for step in range(30):
    for o in opts:
        o.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(X), y)
    loss.backward()
    for o in opts:
        o.step()
print(f"loss after 30 Muon/AdamW steps: {loss.item():.4f}")

# The state dict round-trips (``state[p]`` holds "step" and the rule's buffers, e.g. "exp_avg").
sd = opts[1].state_dict()
print("AdamW state keys of one parameter:", sorted(sd["state"][0].keys()))
