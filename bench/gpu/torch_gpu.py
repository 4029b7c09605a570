"""PyTorch reference on the same GPU (bench/gpu/README.md): the paper's model from the torch reference's model.py
(copied beside this file by prepare.sh; it is not part of the project), inference tiles/s at batch 1..256 in fp32
and with channels-last + bf16 autocast, and training images/s at batch 20 (Adam, mask + class cross-entropy).
Writes JSON to argv[1]."""
import json, sys, time
import torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[2] if len(sys.argv) > 2 else '.')
from model import build

dev = torch.device('cuda')
out = {'torch': torch.__version__, 'device': torch.cuda.get_device_name(0), 'inference': [], 'training': []}

def timed(fn, seconds=2.0):
    fn(); torch.cuda.synchronize()
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        fn(); n += 1
    torch.cuda.synchronize()
    return n / (time.time() - t0)

for variant in ['fp32', 'channels_last_bf16']:
    m = build(4).to(dev).eval()
    if variant != 'fp32':
        m = m.to(memory_format=torch.channels_last)
    for b in [1, 8, 32, 64, 128, 256]:
        x = torch.randn(b, 3, 128, 128, device=dev)
        if variant != 'fp32':
            x = x.to(memory_format=torch.channels_last)
        def run():
            with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=variant != 'fp32'):
                m(x)
        rate = timed(run) * b
        out['inference'].append({'variant': variant, 'batch': b, 'tiles_per_s': rate})
        print(f'torch {variant} batch {b}: {rate:.0f} tiles/s', file=sys.stderr)

for variant in ['fp32', 'channels_last_bf16']:
    m = build(4).to(dev).train()
    if variant != 'fp32':
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    x = torch.randn(20, 3, 128, 128, device=dev); y = torch.randint(0, 4, (20, 128, 128), device=dev); yc = torch.randint(0, 4, (20,), device=dev)
    if variant != 'fp32':
        x = x.to(memory_format=torch.channels_last)
    def step():
        opt.zero_grad()
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=variant != 'fp32'):
            mask, cls = m(x)
            loss = F.cross_entropy(mask.float(), y) + F.cross_entropy(cls.float(), yc)
        loss.backward(); opt.step()
    rate = timed(step) * 20
    out['training'].append({'variant': variant, 'batch': 20, 'images_per_s': rate})
    print(f'torch train {variant} batch 20: {rate:.0f} images/s', file=sys.stderr)

with open(sys.argv[1], 'w') as f:
    json.dump(out, f, indent=2)
