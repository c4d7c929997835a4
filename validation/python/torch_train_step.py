"""Time of a small transformer training step (forward, backward, AdamW).

    python3 torch_train_step.py STEPS

Prints {"steps": N, "ms_per_step": X, "peak_allocated": B}. The harness runs it
plain, under libvgpu-cuda.so without a limit, and with a limit, and compares.
"""
import json
import sys
import time

from cuda_torch import torch_with_cuda


def main() -> int:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    torch = torch_with_cuda()
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=512, nhead=8, dim_feedforward=2048, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=6).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = torch.randn(16, 256, 512, device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(data).pow(2).mean()
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up: kernels chosen, caching allocator filled
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1000.0 / steps
    print(json.dumps({"steps": steps, "ms_per_step": ms, "peak_allocated": torch.cuda.max_memory_allocated()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
