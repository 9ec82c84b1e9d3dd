"""Quick start through the torch adapter: autograd ops and a torch.optim.Optimizer."""
import torch

import optnorm.torch as ont

x = torch.randn(8, 512, dtype=torch.float64, requires_grad=True)
w = torch.ones(512, dtype=torch.float64, requires_grad=True)
y = ont.rms_norm(x, w, eps=1e-6)     # optnorm's forward and analytic VJP inside torch autograd
y.square().sum().backward()
print("grad norms", x.grad.norm().item(), w.grad.norm().item())

model = torch.nn.Linear(16, 3)
opt = ont.optim.AdamW(model.parameters(), lr=1e-2)
data, target = torch.randn(64, 16), torch.randint(0, 3, (64,))
for _ in range(5):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(data), target)
    loss.backward()
    opt.step()
print("loss after 5 AdamW steps", loss.item())
