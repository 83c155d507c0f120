"""Model merging: TIES, task arithmetic, linear averaging and DARE, in memory or streaming.

``merge_state_dicts(base, models, cfg)`` merges state dicts held in memory;
``merge_files(base_dir, model_dirs, out_dir, cfg)`` streams safetensors files tensor by tensor
(full-weight runs or LoRA adapters). Both run the same driver and kernels (``ops.py``); TIES's
rules are options with presets (``config.py``: ``paper``, ``mergekit``, ``legacy``).
"""

from .config import PRESETS, MergeConfig
from .ops import dare, elect_sign, merge_model, merge_state_dicts, merge_tensor, task_vector, trim_topk
from .stream import merge_files

__all__ = ["PRESETS", "MergeConfig", "dare", "elect_sign", "merge_model", "merge_state_dicts", "merge_tensor",
           "merge_files", "task_vector", "trim_topk"]
