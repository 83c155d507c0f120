"""obliviate: machine unlearning for large language models.

Entry points: ``load_model``, ``load_records``, ``unlearn``, ``finetune``; methods in
``obliviate.methods``; the training engine in ``obliviate.engine``; the CLI is ``obliviate``.
"""

from .api import finetune, unlearn
from .data import load_records, load_tofu, make_facts
from .errors import ObliviateError
from .eval import evaluate
from .models import load_model, save_model
from . import methods

__version__ = "0.1.0"
__all__ = ["finetune", "unlearn", "evaluate", "load_model", "save_model", "load_records", "load_tofu", "make_facts", "methods",
           "ObliviateError", "__version__"]
