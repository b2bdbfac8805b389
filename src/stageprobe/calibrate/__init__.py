"""`stageprobe calibrate`: planted losses the study's probes must find (see `engine.py`)."""

from stageprobe.calibrate.engine import (
    Calibration,
    Calibrator,
    CheckOutcome,
    DetectableDrop,
    PlantOutcome,
    ProbeCheck,
    analyse,
    calibration_stages,
    checks_of,
    default_plants,
    detectable_drop,
)
from stageprobe.calibrate.report import calibration_dict, calibration_markdown, write_calibration

__all__ = ["Calibration", "Calibrator", "CheckOutcome", "DetectableDrop", "PlantOutcome", "ProbeCheck", "analyse",
           "calibration_dict", "calibration_markdown", "calibration_stages", "checks_of", "default_plants",
           "detectable_drop", "write_calibration"]
