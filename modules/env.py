"""Process-wide settings that must be in place before third-party imports.

Imported first by every package of alignlab (and by run.py), so DDP ranks and dataloader
workers inherit them: no albumentations update check, no MLflow telemetry, no hub downloads.
"""

import os

for _key, _value in {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)
