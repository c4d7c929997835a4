"""The child side of GPUScheduler.submit_task(..., isolation='process').

Reads a pickled callable on stdin, calls it, and writes ('ok', result, None) or
('error', exception, traceback text) pickled on stdout. It runs bound to the task's
slice (VGPU_* variables, LD_PRELOAD=libvgpu-cuda.so), so its CUDA use is enforced.
"""

import pickle
import sys
import traceback


def main():
    payload = sys.stdin.buffer.read()
    try:
        task = pickle.loads(payload)
        outcome = ("ok", task(), None)
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        outcome = ("error", error, traceback.format_exc())
    try:
        data = pickle.dumps(outcome)
    except Exception as error:  # noqa: BLE001 - a result or exception that cannot be pickled
        data = pickle.dumps(("error", TypeError(f"the task's result cannot be pickled: {error}"), None))
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
