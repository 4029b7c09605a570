#!/usr/bin/python3
"""Manual check, not CI: dump the PyTorch reference (seed 0, BN randomised, eval) as safetensors with torchvision /
reference key names, plus a parity case (input and outputs). Writes into the folder given as argv[1]."""
import json, os, struct, sys
import torch

sys.path.insert(0, "/work/shared/tools/torch-reference")
from model import build  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.set_num_threads(2)
m = build(C=4, seed=0)
# The reference wraps the torchvision modules in nn.Sequential: map its indices back to torchvision's names.
rename = {"encoder.0.": "conv1.", "encoder.1.": "bn1.", "encoder.4.": "layer1.", "encoder.5.": "layer2.", "encoder.6.": "layer3."}
tensors = {}
for k, v in m.state_dict().items():
    for a, b in rename.items():
        if k.startswith(a):
            k = b + k[len(a):]
    tensors[k] = v
header, blobs, offset = {}, [], 0
for k, v in tensors.items():
    if v.dtype == torch.int64:
        ints = v.contiguous().view(-1).tolist()
        raw, dtype = struct.pack("<%dq" % len(ints), *ints), "I64"
    else:
        flat = v.detach().contiguous().view(-1).tolist()
        raw, dtype = struct.pack("<%df" % len(flat), *flat), "F32"
    header[k] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
h = json.dumps(header).encode()
h += b" " * ((8 - (8 + len(h)) % 8) % 8)
with open(os.path.join(out, "reference.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(123))
with torch.inference_mode():
    mask, cls = m(x)
for name, t in (("input", x), ("mask", mask), ("cls", cls)):
    flat = t.contiguous().view(-1).tolist()
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(struct.pack("<%df" % len(flat), *flat))
print("wrote", out, len(tensors), "tensors; torch", torch.__version__)
