"""Process-wide settings that must be in place before third-party imports.

Imported first by every package of alignlab (and by run.py), so DDP ranks and dataloader
workers inherit them: no albumentations update check, no MLflow telemetry, no hub downloads,
and MLflow HTTP calls that give up within seconds (its defaults retry a dead server for minutes,
freezing training): a tracker that stops answering is buffered by experiments/tracking.py.
A variable the user set keeps its value.
"""

import logging
import os
import warnings

for _key, _value in {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int to MLflow: "0.5" fails to parse
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
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
