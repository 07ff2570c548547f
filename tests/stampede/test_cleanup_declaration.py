"""The scenario's ``creates`` and ``cleanup`` keys: parsed, refused in one line naming the field, carried intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stampede.plan.cleanup_declaration import CleanupDeclaration, stock_declaration
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import ScenarioError, load_scenario, parse_scenario

BASE = {
    "name": "showings", "locustfile": "team.py", "journeys": {"ShowingUser": 1},
    "stages": [{"name": "s", "users": 1, "spawn_rate": 1, "duration_s": 5}],
}
SHOWINGS = {
    "kinds": {"showing": {"delete": "DELETE /showings/{id}",
                          "search": {"request": "GET /showings?q={run_tag}",
                                     "paging": {"page": "_page", "limit": "_limit", "size": 100}}}},
}
CREATES = [{"request": "POST /showings", "status": 201, "kind": "showing", "id": "id"}]


def scenario(**extra):
    return parse_scenario({**BASE, **extra}, source="showings.yaml")


def test_a_declared_cleanup_is_parsed_with_its_defaults():
    parsed = scenario(creates=CREATES, cleanup=SHOWINGS)
    (rule,) = parsed.creates
    assert (rule.method, rule.path, rule.kind, rule.status, rule.id, rule.entity_path) == (
        "POST", "/showings", "showing", (201,), "id", "/showings/{id}")
    spec = parsed.cleanup.kinds["showing"]
    assert str(spec.delete) == "DELETE /showings/{id}" and str(spec.check) == "GET /showings/{id}"  # the default check
    assert spec.gone == (404, 410) and spec.search.paging.style == "page" and spec.search.items == ""
    assert parsed.cleanup.auth.kind == "none" and parsed.cleanup.concurrency == 16


def test_the_declaration_survives_the_trip_through_the_plan_and_xcom():
    parsed = scenario(creates=CREATES, cleanup={**SHOWINGS, "auth": {"bearer": {"env": "SHOWINGS_TOKEN"}},
                                                "concurrency": 4, "max_rate": 50})
    plan = RunPlan(run_id="r1", target="http://127.0.0.1:9", environment="local", scenarios=(parsed,), workers=0)
    again = RunPlan.from_dict(plan.to_dict())
    assert again.cleanup == plan.cleanup and again.creates == plan.creates
    locust = plan.locust_plan()
    assert locust["creates"] == [CREATES[0] | {"status": [201]}]
    assert CleanupDeclaration.from_dict(locust["cleanup"]) == plan.cleanup  # the ledger's header, for the reaper


def test_the_stock_journeys_get_the_shipped_crm_declaration_and_a_team_file_gets_none():
    stock = load_scenario("smoke")
    assert stock.cleanup is None and stock.cleanup_declaration == stock_declaration()
    assert set(stock_declaration().kinds) == {"escrow", "listing"}
    assert stock_declaration().auth.kind == "login"
    assert scenario().cleanup_declaration is None  # a team's locustfile: only what it declares
    assert scenario(cleanup="crm").cleanup == stock_declaration()
    assert scenario(cleanup="none").cleanup.creates_nothing


@pytest.mark.parametrize(("extra", "expected"), [
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DEL /showings/{id}"}}}},
                 "cleanup.kinds.showing.delete: must be 'METHOD /path' relative to the target", id="bad-method"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE http://prod.example/showings/{id}"}}}},
                 "cleanup.kinds.showing.delete: must be 'METHOD /path'", id="absolute-url"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE /showings"}}}},
                 "cleanup.kinds.showing.delete: must contain {id}", id="no-id"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE /showings/{showing_id}"}}}},
                 "cleanup.kinds.showing.delete: unknown placeholder {showing_id}", id="unknown-placeholder"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE /s/{id}", "search": {"request": "GET /s"}}}}},
                 "cleanup.kinds.showing.search.request: must contain {run_tag}", id="search-without-tag"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE /s/{id}", "check": "DELETE /s/{id}"}}}},
                 "cleanup.kinds.showing.check: must be a GET", id="check-not-get"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE /s/{id}", "gone": [200]}}}},
                 "cleanup.kinds.showing.gone: must be a list of 4xx statuses", id="gone-2xx"),
    pytest.param({"cleanup": {"kinds": {"showing": {"delete": "DELETE /s/{id}", "purge": True}}}},
                 "cleanup.kinds.showing.purge: unknown key", id="unknown-key"),
    pytest.param({"cleanup": {"auth": {"bearer": {"env": "not a name"}}, **SHOWINGS}},
                 "cleanup.auth.bearer.env: must be an environment variable name", id="bearer-env"),
    pytest.param({"cleanup": {"auth": {"token": "abc"}, **SHOWINGS}},
                 "cleanup.auth: must be none, {login: ...} or {bearer: ...}", id="auth-shape"),
    pytest.param({"cleanup": {"auth": {"login": {"request": "POST /login", "json": {"p": "{env.AWS_KEY}"}}}, **SHOWINGS}},
                 "cleanup.auth.login.json.p: unknown placeholder {env.AWS_KEY}", id="login-leaks-env"),
    pytest.param({"cleanup": {**SHOWINGS, "concurrency": 0}}, "cleanup.concurrency: must be a whole number", id="conc"),
    pytest.param({"cleanup": {"hook": "clean.py:go", **SHOWINGS}}, "cleanup: give exactly one of kinds and hook",
                 id="hook-and-kinds"),
    pytest.param({"cleanup": {"hook": "clean.py"}}, "cleanup.hook: must be 'file.py:function'", id="hook-shape"),
    pytest.param({"cleanup": "nonesuch"}, "cleanup: no shipped declaration named 'nonesuch'", id="unknown-stock"),
    pytest.param({"creates": CREATES}, "creates[0].kind: 'showing' has no cleanup declared", id="creates-alone"),
    pytest.param({"creates": CREATES, "cleanup": {"kinds": {"order": {"delete": "DELETE /o/{id}"}}}},
                 "creates[0].kind: 'showing' has no cleanup declared", id="creates-other-kind"),
    pytest.param({"creates": CREATES, "cleanup": "none"}, "cleanup: is none, but creates declares", id="none-creates"),
    pytest.param({"creates": [{"request": "POST /showings", "kind": "showing", "status": 404}], "cleanup": SHOWINGS},
                 "creates[0].status: must be a 2xx status", id="creates-status"),
    pytest.param({"creates": [{"request": "POST /showings"}], "cleanup": SHOWINGS}, "creates[0].kind: missing",
                 id="creates-kind-missing"),
])
def test_a_bad_declaration_is_refused_in_one_line_naming_the_field(extra, expected):
    with pytest.raises(ScenarioError) as refused:
        scenario(**extra)
    line = str(refused.value)
    assert line.startswith(f"scenario showings.yaml: {expected}"), line
    assert "\n" not in line and "; fix: " in line


def test_a_hook_is_found_next_to_the_scenario_file(tmp_path: Path):
    (tmp_path / "team.py").write_text("from locust import User\n")
    (tmp_path / "clean.py").write_text("def go(context):\n    return {'deleted': 0, 'left': 0}\n")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "cleanup": {"hook": "clean.py:go"}}))
    assert load_scenario(str(path)).cleanup.hook == f"{tmp_path / 'clean.py'}:go"
    path.write_text(yaml.safe_dump({**BASE, "cleanup": {"hook": "missing.py:go"}}))
    with pytest.raises(ScenarioError, match=r"cleanup.hook: 'missing.py' not found; fix: "):
        load_scenario(str(path))


def test_scenarios_of_one_run_must_agree_on_their_cleanup():
    one, other = scenario(name="a", cleanup=SHOWINGS), scenario(name="b", cleanup="none")
    plan = RunPlan(run_id="r1", target="http://127.0.0.1:9", environment="local", scenarios=(one, other), workers=0)
    with pytest.raises(ValueError, match="declare different cleanups; fix: run them separately"):
        plan.cleanup  # noqa: B018
    same = RunPlan(run_id="r1", target="http://127.0.0.1:9", environment="local",
                   scenarios=(one, scenario(name="c", cleanup=SHOWINGS)), workers=0)
    assert same.cleanup.kinds == one.cleanup.kinds
