"""`stageprobe calibrate`: planted losses the study's probes must find (see `engine.py`)."""

from stageprobe.calibrate.engine import (
    DATASET_BY_INFORMATION,
    PROBES_BY_INFORMATION,
    Calibration,
    Calibrator,
    CheckOutcome,
    PlantOutcome,
    ProbeCheck,
    analyse,
    calibration_stages,
    default_plants,
    detectable_drop,
)
from stageprobe.calibrate.report import calibration_dict, calibration_markdown, write_calibration

__all__ = ["DATASET_BY_INFORMATION", "PROBES_BY_INFORMATION", "Calibration", "Calibrator", "CheckOutcome",
           "PlantOutcome", "ProbeCheck", "analyse", "calibration_dict", "calibration_markdown", "calibration_stages",
           "default_plants", "detectable_drop", "write_calibration"]
