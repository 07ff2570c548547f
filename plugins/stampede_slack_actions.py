"""Airflow plugin: the Slack app's Interactivity Request URL, on the API server (``/stampede-slack/interactions``).

The summary's buttons (open the report, re-run this scenario, pin as baseline) send Slack's signed
``block_actions`` POST here. The endpoint checks the signature on the raw body, answers 200 at once (Slack
gives an app 3 s), then acts through the Airflow REST API with Stampede's own service identity and tells
the person who clicked. The rules, the allow-list and the configuration are in
:mod:`stampede.surfaces.slack_actions`.

In the Slack app's settings: *Interactivity & Shortcuts* → Request URL
``https://<airflow api server>/stampede-slack/interactions``.

This file lives at the top of ``plugins/`` because ``plugins/stampede/`` is hidden from Airflow's plugin
loader (``.airflowignore``); it imports only modules of the package that never import Locust.
"""

from __future__ import annotations

import logging

from fastapi import BackgroundTasks, FastAPI, Request, Response

from airflow.plugins_manager import AirflowPlugin
from stampede.core.errors import Refusal
from stampede.surfaces import slack_actions

log = logging.getLogger(__name__)

URL_PREFIX = "/stampede-slack"
app = FastAPI(title="Stampede Slack actions", docs_url=None, redoc_url=None, openapi_url=None)


def _process(click: slack_actions.Click) -> None:
    """After the ack: who clicked, what the button says, through the REST API; the answer to the clicker."""
    try:
        outcome = slack_actions.act(click, actors=slack_actions.load_actors())
    except Refusal as exc:  # the allow-list is broken: say what to fix
        outcome = slack_actions.Outcome(ok=False, text=f":warning: Stampede cannot act on buttons yet: {exc}")
    log.info("Slack button %s by %s: %s", click.action_id, click.user_id, "done" if outcome.ok else "refused")
    slack_actions.answer(click, outcome)


@app.post("/interactions")
async def interactions(request: Request, background: BackgroundTasks) -> Response:
    body = await request.body()  # the raw bytes: the signature is over them, before any parsing
    secret = slack_actions.signing_secret()
    if not secret:
        return Response("Stampede's Slack signing secret is not configured", status_code=503)
    if not slack_actions.verified(body, dict(request.headers), secret):
        return Response("invalid signature", status_code=401)
    try:
        click = slack_actions.parse_click(body)
    except ValueError as exc:
        return Response(str(exc), status_code=400)
    if click is not None:
        background.add_task(_process, click)
    return Response(status_code=200)


class StampedeSlackActionsPlugin(AirflowPlugin):
    name = "stampede_slack_actions"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Stampede Slack actions"}]
