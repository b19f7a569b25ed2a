"""Run Triton kernels in Triton's interpreter on the CPU when no GPU is present.

The variable must be set before ``triton`` is first imported, hence a top-level conftest.
With a GPU the kernels are compiled and run on it as usual.
"""

import os
import shutil

if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"
