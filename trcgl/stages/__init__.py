"""Every expensive step of the book, declared once: the stage graph, one module per domain.

Read in the order of the imports below, this package is the flow of the book::

    label table -> cohort (train / selection / test, patient-disjoint)
      cohort -> image sets: train, selection, test, oracle (fresh balanced renders), pool, normal
      train -> vae -> prompt-diffusion -> samples -> synthetic-set (filter calibrated on selection)
      oracle image set -> oracle classifier
      pool -> pretrain -> features;  train (+ one extra set) -> classifier (best epoch on selection)
        -> predictions (test)
      predictions of every (row, seed) -> table -> results store
      normal + vae -> normal-dit;  train + normal-dit + CAM classifier -> inpainted-set

Chapter by chapter, the modules and the stages they declare:

- :mod:`.data` (chapter 1, and every chapter's inputs): ``label-table``, ``cohort``,
  ``image-set`` (:data:`ROWS`: train, selection, test, oracle, pool, normal), ``extra-set``;
- :mod:`.prompt_diffusion` (chapter 2): ``vae``, ``prompt-diffusion``, ``samples``,
  ``synthetic-set``, ``control-set``, and the oracle (a ``classifier`` on the oracle image set,
  also chapter 1's learnability ceiling);
- :mod:`.classifiers` (chapters 3-7): ``pretrain``, ``features``, ``classifier``, ``predictions``;
- :mod:`.tables` (chapters 3-7: components and cca, gcn_conditions, table1 and controls, table3-5
  and released, the inpainting tables): ``table``;
- :mod:`.inpainting` (chapter 7): ``normal-dit``, ``inpainted-set``, ``copies-set``;
- :mod:`.targets`: the named targets of ``python -m trcgl run NAME``.

Each declaration names the config keys the stage reads, its inputs and the package modules whose
code it runs; :mod:`trcgl.graph` derives the cache key from exactly those. Importing this package
registers every declaration with :mod:`trcgl.graph` (which never imports it: the engine is the
lower layer). Each module ends with the functions that build the requests the chapters and the
command line resolve (:func:`train_set`, :func:`classifier`, :func:`table`, ...), all re-exported
here.
"""
from .common import file_input, folder_input, get, module_weights_digest, resolve
from .data import (ROWS, Rows, build_image_set, check_data, cohort, const_cohort, const_set, image_set,
                   selection_set, test_set, train_set)
from .prompt_diffusion import (CONTROL_KINDS, Samples, control_set, diffusion, filter_classifier, ideal_set, oracle,
                               samples, synthetic_set, train_prompt_diffusion, unlabelled_set, vae)
from .classifiers import (classifier, features, predictions, pretrain, pretrained_checkpoint, train_classifier,
                          uses_features, uses_pretraining)
from .tables import TableResult, extra_request, row_run, table, table_result
from .inpainting import cam_classifier, inpainted_set, normal_dit, train_normal_dit
from .targets import TARGETS, target_requests

__all__ = [
    # shared
    "file_input", "folder_input", "get", "module_weights_digest", "resolve",
    # data (chapter 1)
    "ROWS", "Rows", "build_image_set", "check_data", "cohort", "const_cohort", "const_set", "image_set",
    "selection_set", "test_set", "train_set",
    # prompt diffusion (chapter 2)
    "CONTROL_KINDS", "Samples", "control_set", "diffusion", "filter_classifier", "ideal_set", "oracle", "samples",
    "synthetic_set", "train_prompt_diffusion", "unlabelled_set", "vae",
    # classifiers (chapters 3-7)
    "classifier", "features", "predictions", "pretrain", "pretrained_checkpoint", "train_classifier",
    "uses_features", "uses_pretraining",
    # tables (chapters 3-7)
    "TableResult", "extra_request", "row_run", "table", "table_result",
    # inpainting (chapter 7)
    "cam_classifier", "inpainted_set", "normal_dit", "train_normal_dit",
    # named targets
    "TARGETS", "target_requests",
]
