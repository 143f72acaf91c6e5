"""Process-wide settings that must be in place before third-party imports.

Imported first by every package of alignlab (and by run.py), so DDP ranks and dataloader
workers inherit them: no albumentations update check, no MLflow telemetry, no hub downloads.
"""

import logging
import os
import warnings

for _key, _value in {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

# Known, harmless notices that would otherwise bury the useful output of every run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # frozen teachers
# Epoch metrics of callbacks/evaluation.py are synced by torchmetrics before they are logged.
warnings.filterwarnings(
    "ignore",
    message=r".*self\.log\('(val|test)/(retrieval|alignment|uniformity|modality_gap|zero_shot).*"
    r"sync_dist=True.*",
)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
