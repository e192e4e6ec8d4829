"""Shared test settings.

The suite's tensors are tiny, so torch runs single-threaded: on a shared 2-core machine OpenMP's thread
barriers otherwise cost ~1 s per Lite-Mind step instead of ~5 ms.
"""

import torch

torch.set_num_threads(1)
