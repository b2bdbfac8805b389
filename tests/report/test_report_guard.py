"""`report` never rewrites a run's findings from less than the run measured: it validates first and
refuses a run that fails, leaving FINDINGS.md and report.html byte-identical; `report` and `validate`
name an unfinished run and print the command that resumes it."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from stageprobe.cli import app

runner = CliRunner()
OUTPUTS = ("FINDINGS.md", "report.html")


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_report_of_a_valid_run_rewrites_it(good_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(good_run, tmp_path / "run"))
    (run_dir / "FINDINGS.md").unlink()  # what `report` is for: writing it again
    code, out = invoke("report", str(run_dir))
    assert code == 0, out
    first_line = (good_run / "FINDINGS.md").read_text().splitlines()[0]
    assert (run_dir / "FINDINGS.md").read_text().splitlines()[0] == first_line


def test_report_refuses_a_run_whose_metrics_lost_rows_and_leaves_its_findings_alone(
    good_run: Path, tmp_path: Path
) -> None:
    run_dir = Path(shutil.copytree(good_run, tmp_path / "run"))
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    (run_dir / "metrics.csv").write_text("".join(lines[: 1 + (len(lines) - 1) // 4]))  # ¾ of the rows lost
    before = {name: (run_dir / name).read_bytes() for name in OUTPUTS}
    code, out = invoke("report", str(run_dir))
    assert code == 2, out
    assert "fails validation" in out and "left as they are" in out and "✗" in out
    assert "Traceback" not in out
    assert {name: (run_dir / name).read_bytes() for name in OUTPUTS} == before


def test_report_and_validate_name_an_unfinished_run_and_its_resume_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "experiments").mkdir(parents=True)
    (run_dir / "experiments" / "run.json").write_text("{}")
    (run_dir / "experiments" / "e_q2_1.json").write_text("{}")
    config = {"model": "pixels", "size": "quick", "seed": 3, "controls": False, "stages": ["pixels.*"],
              "experiments": ["e_q2_1", "e_q2_5"], "data": {"spatial": "shapes:n=40"}, "limit": None,
              "seeds": 1, "probe_workers": None, "identity": "abc"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    for command in ("report", "validate"):
        code, out = invoke(command, str(run_dir))
        assert code == 2, out
        assert "unfinished run (1 experiment(s) finished" in out
        resume = shlex.split(out.split("resume it with: ", 1)[1].split("\n")[0])
        # seeds 1 is not the default (3 deciding-probe seeds at default size): the resume command keeps it
        assert resume == ["stageprobe", "run", "--model", "pixels", "--stages", "pixels.*", "--seed", "3",
                          "--seeds", "1", "--quick", "--no-controls", "--experiments", "e_q2_1,e_q2_5", "--data",
                          "spatial=shapes:n=40", "--out", str(run_dir)]
    assert sorted(path.name for path in run_dir.iterdir()) == ["config.yaml", "experiments"]
