"""docs/ci.md stays true: its exit codes are ``Exit``, its scenario validates, its CI files are YAML that run stampede."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from stampede.core.verdict import Exit
from stampede.plan.scenario import parse_scenario

REPO = Path(__file__).resolve().parents[2]
CI = (REPO / "docs" / "ci.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", CI, flags=re.S)


def test_the_exit_code_table_is_the_exit_enum():
    section = CI.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d) \| `(\w+)` \|", section, flags=re.M)
    assert [(int(code), name) for code, name in rows] == [(int(member), member.name) for member in Exit]


def test_readme_and_the_cli_point_to_the_one_list():
    assert "docs/ci.md#exit-codes" in (REPO / "README.md").read_text()
    assert "docs/ci.md#exit-codes" in (REPO / "plugins" / "stampede" / "surfaces" / "cli.py").read_text()
    assert "ci.md#exit-codes" in (REPO / "docs" / "results.md").read_text()


def test_the_example_scenario_validates_and_the_ci_files_run_stampede_with_both_reports():
    scenario, environments, github, gitlab = (yaml.safe_load(block) for block in yaml_blocks())
    assert parse_scenario(scenario, source="preview.yaml").threshold_rules
    assert environments["environments"]["production"]["allow_load"] is False
    steps = github["jobs"]["load-test"]["steps"]
    command = next(step["run"] for step in steps if "stampede run" in str(step.get("run")))
    assert "--junit reports/junit.xml" in command and "--summary-json reports/summary.json" in command
    assert github["jobs"]["load-test"]["needs"] == "deploy-preview"
    job = gitlab["load-test"]
    assert any("--junit reports/junit.xml" in line for line in job["script"])
    assert job["artifacts"]["reports"]["junit"] == "reports/junit.xml" and job["artifacts"]["when"] == "always"
