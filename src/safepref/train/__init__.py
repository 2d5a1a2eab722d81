"""DPO training through TRL, with a reward-hacking monitor (``dpo.py``, ``monitor.py``).

Importing this package is cheap; TRL, torch and matplotlib load when training starts.
"""

from safepref.train.dpo import DPOTrainConfig, LoraSettings, MonitorSettings, load_train_config, train_dpo

__all__ = ["DPOTrainConfig", "LoraSettings", "MonitorSettings", "load_train_config", "train_dpo"]
