"""optnorm's update rules as torch.optim.Optimizer classes (optnorm.torch.optim)."""
import io

import torch

import optnorm.optim as oo
import optnorm.torch as ont

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
X, y = torch.randn(256, 20), torch.randint(0, 4, (256,))


def train(opts, steps):
    for _ in range(steps):
        for o in opts:
            o.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        for o in opts:
            o.step()
    return loss.item()


# Muon on the 2-D weights; the biases go to another rule (here AdamW with a schedule as lr).
matrices = [p for p in model.parameters() if p.ndim == 2]
vectors = [p for p in model.parameters() if p.ndim != 2]
opts = [ont.optim.Muon(matrices, lr=0.02, weight_decay=0.0),
        ont.optim.AdamW(vectors, lr=oo.cosine_decay(1e-2, 60))]
print(f"loss after 30 Muon/AdamW steps: {train(opts, 30):.4f}")

# Switch from torch.optim.AdamW to optnorm's mid-training: the state dict maps one to one.
vec_torch = torch.optim.AdamW(vectors, lr=1e-2)
train([opts[0], vec_torch], 10)
buf = io.BytesIO()
torch.save(vec_torch.state_dict(), buf)
buf.seek(0)
vec_opt = ont.optim.AdamW(vectors, 1e-2)                 # a real signature: lr is the second argument
vec_opt.load_state_dict(torch.load(buf))                 # weights_only=True
print(f"loss after 10 more steps on optnorm's AdamW: {train([opts[0], vec_opt], 10):.4f}")
print("AdamW state keys of one parameter:", sorted(vec_opt.state_dict()["state"][0].keys()))

# Schedule-free AdamW: evaluate at the average x (eval()), train at y (train())
sf = ont.optim.AdamWScheduleFree(model.parameters(), lr=1e-2)
train([sf], 20)
sf.eval()
with torch.no_grad():
    print(f"schedule-free eval loss: {torch.nn.functional.cross_entropy(model(X), y).item():.4f}")
sf.train()
